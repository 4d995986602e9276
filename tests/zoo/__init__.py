"""Models built here to mirror real third-party exports (issue 27's zoo), each with real samples
and its task's own check."""


def fit_classifier(model, x, y, steps: int) -> None:
    """Train ``model`` on labelled arrays with Adam and cross-entropy, batches of 64 drawn with a
    fixed seed (the same weights on every run), and leave it in eval mode."""
    import numpy as np
    import torch

    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        pick = rng.integers(0, len(x), 64)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[pick])), torch.from_numpy(y[pick]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()

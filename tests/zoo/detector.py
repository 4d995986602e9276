"""A YOLO-style detector as small exports of it look: a conv backbone whose head concatenates box
centre and size in pixels (0-320) with sigmoid class scores (0-1) in one output [N, 64 anchors,
4 + 3], exported from PyTorch with a fixed batch of 1. Static int8 gives that output one scale,
which rounds every score to one value; it is judged by its decoded boxes (``--task detection``).

    edgekit optimize tests/zoo/detector.py:build --data tests/zoo/detector.py:data --task detection
"""

import torch


class Detector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU())
        self.box, self.cls = torch.nn.Conv2d(32, 4, 1), torch.nn.Conv2d(32, 3, 1)

    def forward(self, images):
        f = self.backbone(images)
        boxes = torch.sigmoid(self.box(f)) * 320
        scores = torch.sigmoid(self.cls(f) * 4)
        return torch.cat([boxes, scores], 1).flatten(2).transpose(1, 2)  # [N, 64 anchors, 4 + 3]


def build():
    torch.manual_seed(0)
    return Detector().eval(), (torch.rand(1, 3, 32, 32),)  # exported with a fixed batch of 1


def data(seed: int = 1, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    yield {"images": torch.rand(n, 3, 32, 32, generator=g).numpy()}

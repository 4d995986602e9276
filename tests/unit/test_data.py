import numpy as np
import pytest

from edgekit.data import Dataset, load_data, synthesize
from edgekit.errors import DataError
from edgekit.models import load_model


def test_npz_round_trip(tiny_onnx, tmp_path):
    model = load_model(str(tiny_onnx))
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((10, 4), np.float64), labels=np.arange(10))
    data = load_data(str(path), model)
    assert len(data) == 10 and data.arrays["x"].dtype == np.float32  # float64 cast safely
    assert data.labels is not None and len(list(data.batches(4))) == 3
    assert data.get_next()["x"].shape == (1, 4)  # onnxruntime's CalibrationDataReader protocol


def test_a_collector_export_is_data(tiny_onnx, tmp_path):
    """Its metadata and outputs are not inputs; labels count only when every row has one."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    model = load_model(str(tiny_onnx))
    meta = {"request_id": np.array(["a", "b", "c"]), "device": np.array(["pi"] * 3), "time": np.arange(3.0),
            "outputs/y": np.zeros((3, 2), np.float32)}
    np.savez(tmp_path / "part.npz", x=np.ones((3, 4), np.float32), labels=np.array([1, -1, 0]),
             labelled=np.array([True, False, True]), **meta)
    partly = load_data(str(tmp_path / "part.npz"), model)
    assert set(partly.arrays) == {"x"} and partly.labels is None
    np.savez(tmp_path / "full.npz", x=np.ones((3, 4), np.float32), labels=np.array([1, 2, 0]),
             labelled=np.ones(3, bool), **meta)
    assert load_data(str(tmp_path / "full.npz"), model).labels.tolist() == [1, 2, 0]
    folder = tmp_path / "export" / "model=tiny" / "date=2026-11-28"
    folder.mkdir(parents=True)
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(12, np.float32)), 4),
                      "labels": ["1", "2", "0"], "labelled": [True] * 3, "device": ["pi"] * 3})
    pq.write_table(table, folder / "part-0.parquet")
    data = load_data(str(tmp_path / "export"), model)  # the partitioned folder, model= and date= included
    assert data.arrays["x"].shape == (3, 4) and data.labels.tolist() == [1, 2, 0]


@pytest.mark.parametrize("arrays, message", [
    ({"y": np.ones((2, 4), np.float32), "z": np.ones((2, 4), np.float32)}, "missing input x; unknown array y, z"),
    ({"x": np.ones((2, 5), np.float32)}, "data input 'x' has samples of shape \\(5,\\)"),
    ({"x": np.ones((2, 4), np.complex64)}, "is complex64, the model expects float32"),
])
def test_mismatches_are_named(tiny_onnx, tmp_path, arrays, message):
    model = load_model(str(tiny_onnx))
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_data(str(path), model)


def test_one_array_feeds_a_one_input_model_whatever_its_name(tiny_onnx, tmp_path):
    """Converters rename inputs (a TFLite file of the digits model takes serving_default_args_0):
    the README's `bench best.tflite --input-data samples.npz` failed on the name alone."""
    model = load_model(str(tiny_onnx))
    np.savez(tmp_path / "d.npz", input=np.ones((3, 4), np.float32))
    data = load_data(str(tmp_path / "d.npz"), model)
    assert list(data.arrays) == ["x"] and "its one array input as the model's one input x" in data.source



def test_a_csv_is_data_its_feature_columns_fill_the_one_input(tiny_onnx, tmp_path):
    """`predict` read CSV but `--data` refused it ("cannot read data.csv"): one reader (tables)
    serves both. A CSV's numeric columns, in order, are a one-input model's values; a column named
    after the input is that input; labels stay labels; a wrong column count is one clear line."""
    model = load_model(str(tiny_onnx))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 20)
    rows = ["key,f0,f1,f2,f3,labels"] + [f"k{i}," + ",".join(f"{v:.9g}" for v in x[i]) + f",{labels[i]}"
                                          for i in range(20)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = load_data(str(tmp_path / "d.csv"), model)
    assert np.allclose(data.arrays["x"], x) and data.arrays["x"].dtype == np.float32
    assert (data.labels == labels).all() and len(data) == 20
    (tmp_path / "three.csv").write_text("f0,f1,f2\n1,2,3\n")
    with pytest.raises(DataError, match=r"3 numeric columns \(f0...f2\) do not fill input 'x' of 4 values"):
        load_data(str(tmp_path / "three.csv"), model)
    (tmp_path / "broken.csv").write_text("f0,f1\n1,2\n3\n")
    with pytest.raises(DataError, match="is not a readable CSV file"):
        load_data(str(tmp_path / "broken.csv"), model)

def test_bad_files(tiny_onnx, tmp_path):
    model = load_model(str(tiny_onnx))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "none.npz"), model)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(str(bad), model)
    with pytest.raises(DataError, match="different sample counts"):
        Dataset({"a": np.ones(3), "b": np.ones(4)})
    with pytest.raises(DataError, match="2 labels for 3 samples"):
        Dataset({"a": np.ones(3)}, labels=np.ones(2))


def test_factory_data(factory_file):
    model = load_model(f"{factory_file}:build")
    data = load_data(f"{factory_file}:data", model)
    assert len(data) == 12 and data.source.endswith(":data")
    with pytest.raises(DataError, match="yielded str"):
        load_data(f"{factory_file}:wrong_type", model)


def test_synthetic_inputs_follow_the_spec(tiny_onnx):
    data = synthesize(load_model(str(tiny_onnx)), n=5)
    assert data.synthetic and data.arrays["x"].shape == (5, 4)
    assert "synthetic" in data.describe()


EMBEDDING_NET = '''
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(30, 8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))

def build():
    torch.manual_seed(0)
    return Net().eval(), (torch.randint(0, 30, (1, 6)),)

def broken_example():
    return Net().eval(), (torch.tensor([[0, 1, 40]]),)

class Positive(torch.nn.Module):
    def forward(self, x):
        if (x < 0).any():
            raise ValueError("this model takes non-negative intensities")
        return x.sqrt()

def positive():
    return Positive(), (torch.rand(1, 4),)
'''


@pytest.fixture
def embedding_net(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "emb.py"
    path.write_text(EMBEDDING_NET)
    return path


def test_synthetic_ids_stay_inside_the_embedding(embedding_net, tmp_path):
    from edgekit import optimize
    from edgekit.data import synthesize
    from edgekit.models import load_model

    model = load_model(f"{embedding_net}:build")
    data = synthesize(model, n=500)
    assert data.arrays["ids"].min() >= 0 and data.arrays["ids"].max() <= 29 and data.arrays["ids"].max() >= 25
    assert "ids integers in [0, 30) from an embedding of 30 rows" in data.describe()
    result = optimize(model, target="host", formats={"onnx"}, precisions={"fp32"}, out=tmp_path / "o",
                      timing_s=0.2)  # crashed with IndexError when ids were drawn from [0, 100)
    assert "an embedding of 30 rows" in result.report.to_dict()["data"]["eval"]


def test_synthetic_ids_of_an_onnx_gather_follow_its_table(tmp_path):
    from edgekit.data import synthesize
    from edgekit.models import load_model
    from tests.conftest import make_transformer_onnx

    model = load_model(str(make_transformer_onnx(tmp_path / "t.onnx", vocab=50)))
    ids = synthesize(model, n=400).arrays["input_ids"]
    assert ids.min() >= 0 and ids.max() == 49


def test_model_failures_are_one_line_that_names_the_inputs(embedding_net, tmp_path, cli):
    result = cli("optimize", f"{embedding_net}:broken_example", "--formats", "onnx", "--out", tmp_path / "a")
    assert result.exit_code == 1
    assert "fails on its own example inputs (ids: torch.int64[1, 3]): IndexError" in result.output
    result = cli("optimize", f"{embedding_net}:positive", "--formats", "onnx", "--out", tmp_path / "b")
    assert result.exit_code == 1 and "unexpected" not in result.output
    assert "failed on the synthetic evaluation inputs (x: float32[4] in [" in result.output
    assert "ValueError: this model takes non-negative intensities" in result.output and "--data" in result.output

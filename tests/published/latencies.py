"""Published device latencies, from primary sources, split into rows the device models are fitted
on and rows held out to validate them (benchmarks/fit_profiles.py, benchmarks/profile_estimates.py).

The split is by model, the same on every device: a held-out row's architecture was never seen by
the fit for that device, which is what a user's model is. Every number is the source's average
(ms per inference, batch 1). Rows left out, and why, are listed under EXCLUDED.
"""

from __future__ import annotations

from dataclasses import dataclass

# Architectures the fit sees; every other architecture's rows validate.
FIT_MODELS = frozenset({"mobilenetv1", "resnet18", "squeezenet", "shufflenetv2", "efficientnetb0", "alexnet"})

NCNN = "Tencent/ncnn benchmark/README.md (benchncnn, commit a4d2ea1)"
NCNN_NAMES = {"squeezenet": "squeezenet", "mobilenet": "mobilenetv1", "mobilenet_v2": "mobilenetv2",
              "mobilenet_v3": "mobilenetv3", "shufflenet_v2": "shufflenetv2", "mnasnet": "mnasnet10",
              "efficientnet_b0": "efficientnetb0", "googlenet": "googlenet", "resnet18": "resnet18",
              "alexnet": "alexnet", "resnet50": "resnet50"}


@dataclass(frozen=True)
class Row:
    model: str  # a factory in tests.published.models
    target: str  # a profile id
    precision: str  # fp32, fp16, int8
    threads: int
    ms: float
    source: str

    @property
    def role(self) -> str:
        return "fit" if self.model in FIT_MODELS else "validate"


def _ncnn(target: str, where: str, threads: int, table: str, precision: str = "fp32") -> list[Row]:
    rows = []
    for line in table.strip().splitlines():
        name, ms = line.split()
        rows.append(Row(NCNN_NAMES[name], target, precision, threads, float(ms), f"{NCNN}, {where}, {threads} threads"))
    return rows


PI4 = "Raspberry Pi 4 (BCM2711, 1.8 GHz)"
PI5 = "Raspberry Pi 5 (BCM2712, 2.4 GHz)"
SD8G2 = "Snapdragon 8 Gen 2 (SM8550-AB), big cores (powersave=2)"

ROWS: list[Row] = [
    *_ncnn("raspberrypi4", PI4, 4, """
        squeezenet 46.65
        mobilenet 61.17
        mobilenet_v2 61.88
        mobilenet_v3 47.53
        shufflenet_v2 24.56
        mnasnet 51.98
        efficientnet_b0 74.19
        googlenet 114.35
        resnet18 123.12
        alexnet 76.40
        resnet50 262.83"""),
    *_ncnn("raspberrypi4", PI4, 4, """
        squeezenet 42.59
        mobilenet 34.37
        googlenet 101.25
        resnet18 83.92
        resnet50 196.65""", "int8"),
    *_ncnn("raspberrypi4", PI4, 1, """
        squeezenet 73.96
        mobilenet 124.32
        mobilenet_v2 93.48
        mobilenet_v3 72.81
        shufflenet_v2 42.12
        mnasnet 83.98
        efficientnet_b0 129.73
        googlenet 235.94
        resnet18 191.10
        alexnet 139.40
        resnet50 534.11"""),
    *_ncnn("raspberrypi4", PI4, 1, """
        squeezenet 69.42
        mobilenet 84.82
        googlenet 210.00
        resnet18 158.50
        resnet50 423.96""", "int8"),
    *_ncnn("raspberrypi5", PI5, 4, """
        squeezenet 7.38
        mobilenet_v2 10.52
        mobilenet_v3 7.35
        shufflenet_v2 3.39
        mnasnet 7.10
        efficientnet_b0 12.33
        googlenet 25.35
        resnet18 19.96
        alexnet 21.36
        resnet50 46.21"""),
    *_ncnn("raspberrypi5", PI5, 1, """
        squeezenet 11.87
        mobilenet 20.30
        mobilenet_v2 16.38
        mobilenet_v3 11.80
        shufflenet_v2 7.14
        mnasnet 12.99
        efficientnet_b0 24.20
        googlenet 48.71
        resnet18 29.68
        alexnet 35.62
        resnet50 89.43"""),
    *_ncnn("android-arm64", SD8G2, 1, """
        squeezenet 8.47
        mobilenet 15.49
        mobilenet_v2 10.02
        mobilenet_v3 7.93
        shufflenet_v2 5.37
        mnasnet 9.54
        efficientnet_b0 18.88
        googlenet 35.59
        resnet18 21.94
        alexnet 23.98
        resnet50 53.96"""),
    *_ncnn("android-arm64", SD8G2, 4, """
        squeezenet 2.64
        mobilenet 4.21
        mobilenet_v2 3.23
        mobilenet_v3 3.46
        shufflenet_v2 2.11
        mnasnet 3.20
        efficientnet_b0 5.74
        googlenet 11.59
        resnet18 6.63
        alexnet 8.21
        resnet50 18.94"""),
    # XNNPACK's README: the runtime behind LiteRT on the Pi, Raspberry Pi 4 ARM64, as many threads
    # as cores (end2end_bench, Feb 2022; int8 per-channel).
    *[Row(m, "raspberrypi4", precision, 4, ms, "google/XNNPACK README.md, Raspberry Pi 4 (BCM2711, ARM64), "
          "multi-threaded")
      for m, precision, ms in (("mobilenetv1", "fp32", 77.0), ("mobilenetv2", "fp32", 46.0),
                               ("mobilenetv3", "fp32", 40.0), ("mobilenetv1", "int8", 24.0),
                               ("mobilenetv2", "int8", 17.0))],
    # Coral's benchmark page, Dev Board with Edge TPU, full-integer TFLite models.
    *[Row(m, "coral-edgetpu", "int8", 1, ms, "coral.ai/docs/edgetpu/benchmarks, table 1, Dev Board with Edge TPU")
      for m, ms in (("mobilenetv1", 2.4), ("mobilenetv2", 2.6), ("googlenet", 4.1), ("resnet50_299", 56.0),
                    ("squeezenet", 2.0))],
    # torch2trt's Jetson Nano table: TensorRT fp16 latency, torchvision models at 224x224.
    *[Row(m, "jetson-nano", "fp16", 1, ms, "NVIDIA-AI-IOT/torch2trt benchmarks/JETSON_NANO.md, TensorRT fp16")
      for m, ms in (("alexnet", 14.7), ("squeezenet", 4.34), ("resnet18", 11.4), ("resnet34", 20.2),
                    ("resnet50", 29.8))],
]

EXCLUDED = [
    ("ncnn Pi 5 mobilenet fp32, 4 threads", "avg 33.88 ms with min 9.00 and max 72.98: a disturbed run"),
    ("ncnn Raspberry Pi 5 int8 rows", "no faster than fp32 (resnet18 1 thread: int8 36.4 ms, fp32 29.7 ms): a "
     "build without the A76's sdot kernels; fitted, they would teach the optimizer that int8 never pays on a "
     "Pi 5, which XNNPACK's sdot kernels contradict. The Pi 5's int8 factor is a stated prior instead"),
    ("ncnn Snapdragon 8 Gen 2 int8 rows", "erratic (resnet18 int8 3.4x slower than fp32 at 4 threads): "
     "ncnn's int8 path on that SoC, not the device"),
    ("ncnn vgg16 and the detection models", "vgg16's 550 MB graph; SSD/YOLO heads not rebuilt"),
    ("Coral VGG16, DenseNet, Inception v4", "not rebuilt; VGG16's 138 M parameters stream from the host"),
]

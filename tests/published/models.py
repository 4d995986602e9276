"""Published-benchmark model shapes rebuilt in plain PyTorch (random weights: latency only).

ResNet-18/50 (He et al. 2015, torchvision layout) and MobileNetV2 (Sandler et al. 2018), at
224x224, batch 1: the shapes that ncnn, TFLite and Coral report latencies for.
"""

import torch
from torch import nn


def _bn_relu(c):
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, c, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, c, 3, stride, 1, bias=False), *_bn_relu(c),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.skip = (nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                     if stride != 1 or cin != c else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, c, stride):
        super().__init__()
        out = c * 4
        self.body = nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), *_bn_relu(c),
                                  nn.Conv2d(c, c, 3, stride, 1, bias=False), *_bn_relu(c),
                                  nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out))
        self.skip = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                     if stride != 1 or cin != out else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet(block, layers, classes=1000):
    mods = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), *_bn_relu(64), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (c, n) in enumerate(zip((64, 128, 256, 512), layers)):
        for j in range(n):
            mods.append(block(cin, c, 2 if (j == 0 and i > 0) else 1))
            cin = c * block.expansion
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*mods)


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(classes=1000):
    config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    mods = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
    cin = 32
    for t, c, n, s in config:
        for i in range(n):
            mods.append(Inverted(cin, c, s if i == 0 else 1, t))
            cin = c
    mods += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(),
             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*mods)


def _example():
    return (torch.randn(1, 3, 224, 224),)


def resnet18():
    torch.manual_seed(0)
    return resnet(Basic, (2, 2, 2, 2)).eval(), _example()


def resnet50():
    torch.manual_seed(0)
    return resnet(Bottleneck, (3, 4, 6, 3)).eval(), _example()


def mobilenetv2():
    torch.manual_seed(0)
    return mobilenet_v2().eval(), _example()


# (model factory, target profile, precision, published ms, source). Latencies are averages as
# published; the estimate is compared with them by benchmarks/profile_estimates.py.
PUBLISHED = [
    ("mobilenetv2", "raspberrypi4", "fp32", 61.9, "ncnn benchmark/README.md, Pi 4 @1.8 GHz, 4 threads"),
    ("resnet18", "raspberrypi4", "fp32", 123.1, "ncnn benchmark/README.md, Pi 4 @1.8 GHz, 4 threads"),
    ("resnet18", "raspberrypi4", "int8", 83.9, "ncnn benchmark/README.md, Pi 4 @1.8 GHz, 4 threads"),
    ("resnet50", "raspberrypi4", "fp32", 262.8, "ncnn benchmark/README.md, Pi 4 @1.8 GHz, 4 threads"),
    ("resnet50", "raspberrypi4", "int8", 196.7, "ncnn benchmark/README.md, Pi 4 @1.8 GHz, 4 threads"),
    ("mobilenetv2", "coral-edgetpu", "int8", 2.5, "Coral FAQ: MobileNet v2 classification, Dev Board"),
]
# Multiply-adds of the published architectures (papers / torchvision), to check the rebuilds.
KNOWN_GMACS = {"resnet18": 1.82, "resnet50": 4.11, "mobilenetv2": 0.30}

"""Published-benchmark model shapes rebuilt in plain PyTorch (random weights: latency only).

The architectures that ncnn's benchmark README, torch2trt's Jetson table and Coral's benchmark
page report latencies for, at batch 1, in torchvision's layout (torchvision itself is not
installable beside this torch): ResNet-18/34/50 (He et al. 2015), MobileNet v1/v2/v3-Large
(Howard et al. 2017, Sandler et al. 2018, Howard et al. 2019), SqueezeNet 1.1 (Iandola et al.
2016), ShuffleNet v2 1.0x (Ma et al. 2018), GoogLeNet (Szegedy et al. 2014), AlexNet (Krizhevsky
et al. 2012), EfficientNet-B0 (Tan and Le 2019) and MNASNet 1.0 (Tan et al. 2019). KNOWN_GMACS
holds each paper's multiply-adds; tests/unit/test_published_table.py checks the rebuilds against it.
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



def _cbr(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act()]


def mobilenet_v1(classes=1000):
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    mods, cin = _cbr(3, 32, stride=2), 32
    for cout, stride in plan:
        mods += _cbr(cin, cin, stride=stride, groups=cin) + _cbr(cin, cout, k=1)
        cin = cout
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes))


def _divisible(v, d=8):
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, gate=nn.Hardsigmoid, act=nn.ReLU):
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1),
                                  gate())

    def forward(self, x):
        return x * self.body(x)


class MBConv(nn.Module):
    """MobileNetV3 / EfficientNet / MNASNet block: expand, depthwise, optional SE, project."""

    def __init__(self, cin, hidden, cout, k, stride, act=nn.ReLU, se=None):
        super().__init__()
        layers = [] if hidden == cin else _cbr(cin, hidden, k=1, act=act)
        layers += _cbr(hidden, hidden, k=k, stride=stride, groups=hidden, act=act)
        if se:
            layers.append(se(hidden))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v3_large(classes=1000):
    re, hs = nn.ReLU, nn.Hardswish
    plan = [(3, 16, 16, False, re, 1), (3, 64, 24, False, re, 2), (3, 72, 24, False, re, 1),
            (5, 72, 40, True, re, 2), (5, 120, 40, True, re, 1), (5, 120, 40, True, re, 1),
            (3, 240, 80, False, hs, 2), (3, 200, 80, False, hs, 1), (3, 184, 80, False, hs, 1),
            (3, 184, 80, False, hs, 1), (3, 480, 112, True, hs, 1), (3, 672, 112, True, hs, 1),
            (5, 672, 160, True, hs, 2), (5, 960, 160, True, hs, 1), (5, 960, 160, True, hs, 1)]
    mods, cin = _cbr(3, 16, stride=2, act=hs), 16
    for k, exp, cout, se, act, stride in plan:
        mods.append(MBConv(cin, exp, cout, k, stride, act, (lambda c: SqueezeExcite(c, _divisible(c // 4))) if se else None))
        cin = cout
    mods += _cbr(cin, 960, k=1, act=hs)
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(960, 1280), hs(),
                         nn.Linear(1280, classes))


def efficientnet_b0(classes=1000):
    plan = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
            (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    mods, cin = _cbr(3, 32, stride=2, act=nn.SiLU), 32
    for expand, k, stride, cout, repeats in plan:
        for i in range(repeats):
            squeeze = max(1, cin // 4)
            mods.append(MBConv(cin, cin * expand, cout, k, stride if i == 0 else 1, nn.SiLU,
                               lambda c, s=squeeze: SqueezeExcite(c, s, gate=nn.Sigmoid, act=nn.SiLU)))
            cin = cout
    mods += _cbr(cin, 1280, k=1, act=nn.SiLU)
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))


def mnasnet(classes=1000):
    plan = [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2), (192, 5, 2, 6, 4),
            (320, 3, 1, 6, 1)]
    mods = _cbr(3, 32, stride=2) + _cbr(32, 32, groups=32) + [nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16)]
    cin = 16
    for cout, k, stride, expand, repeats in plan:
        for i in range(repeats):
            mods.append(MBConv(cin, cin * expand, cout, k, stride if i == 0 else 1))
            cin = cout
    mods += _cbr(cin, 1280, k=1)
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))


class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU())

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


def squeezenet1_1(classes=1000):
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64),
                         pool(), Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(), Fire(256, 48, 192, 192),
                         Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
                         nn.Conv2d(512, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class ShuffleBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, half = stride, cout // 2
        if stride > 1:
            self.left = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                      *_cbr(cin, half, k=1))
        right_in = cin if stride > 1 else half
        self.right = nn.Sequential(*_cbr(right_in, half, k=1),
                                   nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False), nn.BatchNorm2d(half),
                                   *_cbr(half, half, k=1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle


def shufflenet_v2(classes=1000):
    mods, cin = _cbr(3, 24, stride=2) + [nn.MaxPool2d(3, 2, 1)], 24
    for cout, repeats in ((116, 4), (232, 8), (464, 4)):
        for i in range(repeats):
            mods.append(ShuffleBlock(cin, cout, 2 if i == 0 else 1))
            cin = cout
    mods += _cbr(cin, 1024, k=1)
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.branches = nn.ModuleList([
            nn.Sequential(*_cbr(cin, c1, k=1)),
            nn.Sequential(*_cbr(cin, c3r, k=1), *_cbr(c3r, c3)),
            nn.Sequential(*_cbr(cin, c5r, k=1), *_cbr(c5r, c5)),  # torchvision's 3x3 "5x5" branch
            nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), *_cbr(cin, pool, k=1))])

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


def googlenet_v1(classes=1000):
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(*_cbr(3, 64, k=7, stride=2), pool(), *_cbr(64, 64, k=1), *_cbr(64, 192), pool(),
                         Inception(192, 64, 96, 128, 16, 32, 32), Inception(256, 128, 128, 192, 32, 96, 64), pool(),
                         Inception(480, 192, 96, 208, 16, 48, 64), Inception(512, 160, 112, 224, 24, 64, 64),
                         Inception(512, 128, 128, 256, 24, 64, 64), Inception(512, 112, 144, 288, 32, 64, 64),
                         Inception(528, 256, 160, 320, 32, 128, 128), nn.MaxPool2d(2, 2, ceil_mode=True),
                         Inception(832, 256, 160, 320, 32, 128, 128), Inception(832, 384, 192, 384, 48, 128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes))


def alexnet_v1(classes=1000):
    pool = lambda: nn.MaxPool2d(3, 2)  # noqa: E731
    return nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), pool(), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
                         pool(), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), pool(), nn.AdaptiveAvgPool2d(6),
                         nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, classes))


def _factory(build, size=224):
    def make():
        torch.manual_seed(0)
        return build().eval(), (torch.randn(1, 3, size, size),)
    make.__name__ = build.__name__
    return make


resnet18 = _factory(lambda: resnet(Basic, (2, 2, 2, 2)))
resnet34 = _factory(lambda: resnet(Basic, (3, 4, 6, 3)))
resnet50 = _factory(lambda: resnet(Bottleneck, (3, 4, 6, 3)))
resnet50_299 = _factory(lambda: resnet(Bottleneck, (3, 4, 6, 3)), 299)
mobilenetv1 = _factory(mobilenet_v1)
mobilenetv2 = _factory(mobilenet_v2)
mobilenetv3 = _factory(mobilenet_v3_large)
squeezenet = _factory(squeezenet1_1)
shufflenetv2 = _factory(shufflenet_v2)
googlenet = _factory(googlenet_v1)
alexnet = _factory(alexnet_v1)
efficientnetb0 = _factory(efficientnet_b0)
mnasnet10 = _factory(mnasnet)

# Multiply-adds of the published architectures (papers; torchvision's model cards), to check the
# rebuilds (resnet50_299, Coral's input size, is resnet50's graph at 299x299).
KNOWN_GMACS = {"resnet18": 1.82, "resnet34": 3.67, "resnet50": 4.11, "mobilenetv1": 0.569,
               "mobilenetv2": 0.30, "mobilenetv3": 0.217, "squeezenet": 0.35, "shufflenetv2": 0.146,
               "googlenet": 1.50, "alexnet": 0.71, "efficientnetb0": 0.39, "mnasnet10": 0.31}

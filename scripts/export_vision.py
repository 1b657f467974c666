#!/usr/bin/env python3
"""Export small vision models with the torch dynamo ONNX exporter, with onnxruntime outputs.

Usage: python3 scripts/export_vision.py small OUT_DIR [NAME...]  (committed: tests/data/vision)
       python3 scripts/export_vision.py large OUT_DIR [NAME...]  (torchvision; .cache/vision, by setup.sh)
(NAME...: export only these models of the set.)

`small`: hand-made CNNs of a few KB, committed for CI (no torchvision needed):
  small_cnn     Conv, BatchNormalization, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm
                (exported with optimize=False, so BatchNormalization stays an op)
  small_cnn_opt the same model with the exporter's optimiser (BatchNorm folded into Conv)
  tiny_mbv3     a MobileNet-V3-style net: depthwise Conv, HardSwish, squeeze-excite with
                HardSigmoid, AveragePool, ConvTranspose, Pad (reflect)
  tiny_unet     a U-Net: two encoder levels (MaxPool), a bilinear Resize and a ConvTranspose
                on the way up, skip connections concatenated, a nearest-upsampled side output
`sweep`: more torchvision architectures for a breadth check (`scripts/sweep_real.py DIR`):
  classifiers (VGG, SqueezeNet, ShuffleNet, DenseNet, GoogLeNet, Inception, MobileNet-V2/V3-large,
  MNASNet, RegNet, ResNeXt, EfficientNet-V2, ConvNeXt, Swin, MaxViT) and segmentation heads
  (FCN, DeepLabV3, LR-ASPP); exported at a small side, batch 2.
`large`: torchvision resnet18, mobilenet_v3_small, efficientnet_b0, a small VisionTransformer,
  a reduced ConvNeXt (2 stages of widths 16 and 32, one block each: 7x7 depthwise Conv,
  LayerNorm over channels, Linear + GELU, layer scale) (the torchvision ones weigh 10-45 MB, so
  they are generated, not committed).
Every model gets random weights (fixed seed; BatchNorm statistics and affine parameters
randomised too, so no layer is an identity and outputs are not degenerate), eval mode, batch 2.
Writes, as scripts/export_real.py does:
  OUT_DIR/NAME.onnx (+ NAME.onnx.data for large models)
  OUT_DIR/NAME/input_<input>.npy, OUT_DIR/NAME/ort_output_<output>.npy
Needs: torch, onnxscript, onnx, onnxruntime, numpy (and torchvision for `large`).
"""
import os
import sys
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 2


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.relu(self.b2(self.c2(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyMBV3(nn.Module):
    """Stem, an inverted residual with depthwise conv and squeeze-excite, an upsampling
    ConvTranspose, reflect padding, average pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.se1, self.se2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.conv = nn.Conv2d(6, 12, 3, dilation=2)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.hardswish(self.bn0(self.stem(x)))
        y = F.hardswish(self.dw(F.hardswish(self.expand(x))))
        s = F.hardsigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(y, 1)))))
        x = x + self.project(y * s)
        x = self.up(x)
        x = self.conv(F.pad(x, (2, 2, 2, 2), mode="reflect"))
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyUNet(nn.Module):
    """Encoder 32 -> 16 -> 8 pixels, decoder back up with a bilinear Resize (half_pixel) and a
    ConvTranspose, skip connections by Concat, and a side output upsampled x4 (nearest)."""

    def __init__(self):
        super().__init__()
        self.e1a, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.e1b = nn.Conv2d(8, 8, 3, padding=1)
        self.e2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.mid = nn.Conv2d(16, 32, 3, padding=1)
        self.up2 = nn.Conv2d(32, 16, 1)
        self.d2 = nn.Conv2d(32, 16, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.d1 = nn.Conv2d(16, 8, 3, padding=1)
        self.head, self.side = nn.Conv2d(8, 3, 1), nn.Conv2d(32, 3, 1)

    def forward(self, x):
        s1 = F.relu(self.e1b(F.relu(self.bn1(self.e1a(x)))))
        s2 = F.relu(self.bn2(self.e2(F.max_pool2d(s1, 2))))
        m = F.relu(self.mid(F.max_pool2d(s2, 2)))
        u = self.up2(F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False))
        d = F.relu(self.d2(torch.cat([u, s2], 1)))
        d = F.relu(self.d1(torch.cat([self.up1(d), s1], 1)))
        return self.head(d) + F.interpolate(self.side(m), scale_factor=4, mode="nearest")


def convnext_mini():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    cfg = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    return ConvNeXt(cfg, stochastic_depth_prob=0.0, layer_scale=0.5, num_classes=10)


# Weight gain per model where He's 2/fan_in makes random-weight activations grow without
# bound: EfficientNet-V2-S reached logits of 3e7, where onnxruntime and PyTorch differ by
# half of that (float rounding amplified), so no comparison can hold.
GAIN = {"efficientnet_v2_s": 1.0}


def randomize(model, seed, gain=2.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, (nn.Linear, nn.Conv2d)) else m.weight.shape[0]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (gain / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def models(kind):
    """(name, constructor, input side, exporter optimisation)."""
    if kind == "small":
        return [("small_cnn", SmallCNN, 32, False), ("small_cnn_opt", SmallCNN, 32, True),
                ("tiny_mbv3", TinyMBV3, 32, True), ("tiny_unet", TinyUNet, 32, True)]
    import torchvision.models as tvm
    from torchvision.models.vision_transformer import VisionTransformer
    if kind == "sweep":
        import torchvision.models.segmentation as seg

        def head(ctor):  # segmentation models return a dict: keep the main output
            class Out(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.m = ctor()

                def forward(self, x):
                    return self.m(x)["out"]
            return Out
        return [
            ("vgg11_bn", tvm.vgg11_bn, 32, True),
            ("squeezenet1_1", tvm.squeezenet1_1, 64, True),
            ("shufflenet_v2_x0_5", tvm.shufflenet_v2_x0_5, 64, True),
            ("densenet121", tvm.densenet121, 64, True),
            ("googlenet", lambda: tvm.googlenet(aux_logits=False, init_weights=False), 64, True),
            ("inception_v3", lambda: tvm.inception_v3(aux_logits=False, init_weights=False), 80, True),
            ("mobilenet_v2", tvm.mobilenet_v2, 64, True),
            ("mobilenet_v3_large", tvm.mobilenet_v3_large, 64, True),
            ("mnasnet0_5", tvm.mnasnet0_5, 64, True),
            ("regnet_y_400mf", tvm.regnet_y_400mf, 64, True),
            ("resnext50_32x4d", tvm.resnext50_32x4d, 64, True),
            ("efficientnet_v2_s", tvm.efficientnet_v2_s, 64, True),
            ("convnext_tiny", tvm.convnext_tiny, 64, True),
            ("swin_t", tvm.swin_t, 64, True),
            ("maxvit_t", tvm.maxvit_t, 224, True),
            ("fcn_resnet50", head(lambda: seg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False)), 64, True),
            ("deeplabv3_mobilenet", head(lambda: seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)), 64, True),
            ("lraspp_mobilenet", head(lambda: seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)), 64, True),
        ]
    return [
        ("resnet18", tvm.resnet18, 64, True),
        ("mobilenet_v3_small", tvm.mobilenet_v3_small, 64, True),
        ("efficientnet_b0", tvm.efficientnet_b0, 64, True),
        ("vit_small", lambda: VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10), 32, True),
        ("convnext_mini", convnext_mini, 32, True),
    ]


def export(name, ctor, side, optimize, out_dir, seed, large):
    torch.manual_seed(seed)
    model = randomize(ctor(), seed, GAIN.get(name, 2.0))
    if name == "vit_small":
        with torch.no_grad():  # torchvision zero-initialises the ViT head
            model.heads.head.weight.normal_(0, 0.2)
    x = np.random.default_rng(seed).standard_normal((BATCH, 3, side, side)).astype(np.float32)
    path = os.path.join(out_dir, f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (torch.from_numpy(x),), dynamo=True, optimize=optimize,
                                 input_names=["x"], output_names=["logits"], verbose=False)
    prog.save(path, external_data=large)
    m = onnx.load(path, load_external_data=False)
    # Stack traces and module names on every node mean nothing to a runtime: drop them.
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    if not large:
        onnx.save(m, path)
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref_dir = os.path.join(out_dir, name)
    os.makedirs(ref_dir, exist_ok=True)
    np.save(os.path.join(ref_dir, "input_x.npy"), x)
    (out,) = sess.run(None, {"x": x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.save(os.path.join(ref_dir, "ort_output_logits.npy"), out)
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"{path}: {len(m.graph.node)} nodes, {os.path.getsize(path)} bytes, |logits| max "
          f"{np.abs(out).max():.3g}, onnxruntime vs torch max abs {np.abs(out - want).max():.2e}; ops: {' '.join(ops)}")


def main():
    kind, out_dir, only = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    for i, (name, ctor, side, optimize) in enumerate(models(kind)):
        if only and name not in only:
            continue
        try:
            export(name, ctor, side, optimize, out_dir, 20261202 + i, kind != "small")
        except Exception as e:  # one architecture's export failing must not stop a sweep
            if kind != "sweep":
                raise
            print(f"{name}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


if __name__ == "__main__":
    main()

"""Each converter loads a PyTorch module's random weights and reproduces its outputs (≤ 1e-4, float32).

The reference modules below follow the public architectures' parameter names
(torchvision vgg.py / resnet.py, insightface arcface_torch iresnet.py,
AlfredXiangWu LightCNN light_cnn_v2.py, richzhang lpips), shrunk where the
Flax network allows it so the test stays fast on a CPU.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hallujax.convert import arcface, common, lightcnn, lpips, torchvision  # noqa: E402
from hallujax.metrics.image_quality import lpips_distance  # noqa: E402
from hallujax.models.recognition import LightCNN29, ResNetFace  # noqa: E402
from hallujax.models.vgg import VGG16, VGG19, ResNet50Features  # noqa: E402

TOLERANCE = 1e-4


def randomize_batch_norm_statistics(module: nn.Module, generator: torch.Generator) -> None:
  """Give every BatchNorm non-trivial affine parameters and running statistics, so they are tested."""
  for layer in module.modules():
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
      size = layer.num_features
      layer.weight.data = 1.0 + 0.2 * torch.randn(size, generator=generator)
      layer.bias.data = 0.2 * torch.randn(size, generator=generator)
      layer.running_mean = 0.2 * torch.randn(size, generator=generator)
      layer.running_var = 0.5 + torch.rand(size, generator=generator)


def he_initialize(module: nn.Module, gain: float = 1.0) -> nn.Module:
  """He-normal conv/linear weights and small random biases: activations stay O(1) through deep stacks,
  so a matching output is a meaningful check (PyTorch's default init shrinks them layer by layer)."""
  for layer in module.modules():
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
      nn.init.kaiming_normal_(layer.weight)
      layer.weight.data *= gain
      if layer.bias is not None:
        nn.init.normal_(layer.bias, std=0.1)
  return module


def images_pair(shape, seed=0):
  """The same images as NHWC numpy (for Flax) and NCHW torch tensor, in [-1, 1]."""
  images = np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)
  return images, torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def max_abs_difference(flax_output, torch_output) -> float:
  return float(np.max(np.abs(np.asarray(flax_output) - torch_output.detach().numpy())))


# --------------------------------------------------------------------- torchvision VGG


VGG_CONFIGS = {16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
               19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                    512, 512, 512, 512, "M"]}


class TorchVGG(nn.Module):
  """torchvision ``VGG`` (features + a small classifier, names as torchvision)."""

  def __init__(self, depth):
    super().__init__()
    layers, channels = [], 3
    for item in VGG_CONFIGS[depth]:
      if item == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
        channels = item
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Sequential(nn.Linear(512, 10))

  def named_features(self, x):
    """Outputs after every ReLU, keyed "reluS_I"."""
    outputs, stage, index = {}, 1, 0
    for layer in self.features:
      x = layer(x)
      if isinstance(layer, nn.MaxPool2d):
        stage, index = stage + 1, 0
      elif isinstance(layer, nn.Conv2d):
        index += 1
        outputs[f"conv{stage}_{index}"] = x
      else:
        outputs[f"relu{stage}_{index}"] = x
    return outputs


def test_vgg19_matches_torchvision_layout():
  torch.manual_seed(0)
  reference = he_initialize(TorchVGG(19)).eval()
  variables = torchvision.convert_vgg(common.state_dict_to_numpy(reference.state_dict()), VGG19(), 32)
  images, images_torch = images_pair((2, 32, 32, 3))
  features = jax.jit(VGG19().apply)(variables, images)
  unit = (images_torch + 1) / 2
  normalized = (unit - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
      [0.229, 0.224, 0.225])[:, None, None]
  with torch.no_grad():
    expected = reference.named_features(normalized)
  differences = {name: max_abs_difference(features[name], expected[name].permute(0, 2, 3, 1))
                 for name in ("conv1_1", "relu2_2", "relu3_4", "relu5_4")}
  print("VGG-19 max abs difference:", differences, "largest |relu5_4|:", float(expected["relu5_4"].abs().max()))
  assert max(differences.values()) <= TOLERANCE


# --------------------------------------------------------------------- torchvision ResNet-50


class TorchBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class TorchResNet(nn.Module):
  """torchvision ``ResNet`` with Bottleneck blocks; `width` shrinks it for the test (64 is ResNet-50)."""

  def __init__(self, layers, width):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = width
    for stage, blocks in enumerate(layers):
      planes, stride = width * 2**stage, 1 if stage == 0 else 2
      downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
      modules = [TorchBottleneck(inplanes, planes, stride, downsample)]
      inplanes = planes * 4
      modules += [TorchBottleneck(inplanes, planes, 1, None) for _ in range(1, blocks)]
      setattr(self, f"layer{stage + 1}", nn.Sequential(*modules))
    self.fc = nn.Linear(inplanes, 10)

  def forward(self, x):
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    for stage in range(1, 5):
      x = getattr(self, f"layer{stage}")(x)
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def test_resnet50_features_match_torchvision_layout():
  generator = torch.manual_seed(1)
  reference = TorchResNet((3, 4, 6, 3), width=8).eval()  # BatchNorm keeps it O(1)
  randomize_batch_norm_statistics(reference, generator)
  model = ResNet50Features(width=8)
  variables = torchvision.convert_resnet50(common.state_dict_to_numpy(reference.state_dict()), model, 64)
  images, images_torch = images_pair((2, 64, 64, 3), seed=1)
  unit = (images_torch + 1) / 2
  normalized = (unit - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
      [0.229, 0.224, 0.225])[:, None, None]
  with torch.no_grad():
    expected = reference(normalized)
  difference = max_abs_difference(jax.jit(model.apply)(variables, images), expected)
  print("ResNet-50 (width 8) max abs difference:", difference, "largest |output|:", float(expected.abs().max()))
  assert difference <= TOLERANCE


# --------------------------------------------------------------------- arcface_torch iResNet


class TorchIBasicBlock(nn.Module):
  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
    self.prelu = nn.PReLU(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (self.downsample(x) if self.downsample is not None else x)


class TorchIResNet(nn.Module):
  """arcface_torch ``IResNet`` with configurable widths and final map size (7x7 at 112 in the original)."""

  def __init__(self, layers, widths, num_features, final_size):
    super().__init__()
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-05)
    self.prelu = nn.PReLU(widths[0])
    inplanes = widths[0]
    for stage, (blocks, planes) in enumerate(zip(layers, widths)):
      downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
      modules = [TorchIBasicBlock(inplanes, planes, 2, downsample)]
      modules += [TorchIBasicBlock(planes, planes, 1, None) for _ in range(1, blocks)]
      inplanes = planes
      setattr(self, f"layer{stage + 1}", nn.Sequential(*modules))
    self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-05)
    self.dropout = nn.Dropout(p=0.0)
    self.fc = nn.Linear(inplanes * final_size * final_size, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-05)

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    for stage in range(1, 5):
      x = getattr(self, f"layer{stage}")(x)
    x = self.dropout(torch.flatten(self.bn2(x), 1))
    return self.features(self.fc(x))


def test_arcface_iresnet_matches_arcface_torch_layout():
  generator = torch.manual_seed(2)
  stage_sizes, widths = (2, 2, 2, 2), (8, 16, 16, 32)  # iresnet18 depth, narrow
  reference = TorchIResNet(stage_sizes, widths, num_features=16, final_size=3).eval()
  randomize_batch_norm_statistics(reference, generator)
  for prelu in (m for m in reference.modules() if isinstance(m, nn.PReLU)):
    prelu.weight.data = torch.rand(prelu.weight.shape, generator=generator)
  model = ResNetFace(stage_sizes=stage_sizes, widths=widths, embedding_dim=16)
  variables = arcface.convert_arcface(common.state_dict_to_numpy(reference.state_dict()), model, image_size=48)
  images, images_torch = images_pair((2, 48, 48, 3), seed=2)
  with torch.no_grad():
    expected = reference(images_torch)
  difference = max_abs_difference(jax.jit(model.apply)(variables, images), expected)
  print("arcface_torch iResNet max abs difference:", difference, "largest |output|:", float(expected.abs().max()))
  assert difference <= TOLERANCE


# --------------------------------------------------------------------- LightCNN-29 v2


class TorchMFM(nn.Module):
  def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
    super().__init__()
    self.out_channels = out_channels
    self.filter = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding)

  def forward(self, x):
    first, second = torch.split(self.filter(x), self.out_channels, 1)
    return torch.max(first, second)


class TorchGroup(nn.Module):
  def __init__(self, in_channels, out_channels):
    super().__init__()
    self.conv_a = TorchMFM(in_channels, in_channels, 1, 1, 0)
    self.conv = TorchMFM(in_channels, out_channels, 3, 1, 1)

  def forward(self, x):
    return self.conv(self.conv_a(x))


class TorchResblock(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.conv1 = TorchMFM(channels, channels)
    self.conv2 = TorchMFM(channels, channels)

  def forward(self, x):
    return self.conv2(self.conv1(x)) + x


class TorchLightCNN29v2(nn.Module):
  """``network_29layers_v2(resblock, [1, 2, 3, 4])``; `final_size` is 8 at the standard 128x128."""

  def __init__(self, final_size, num_classes):
    super().__init__()
    self.conv1 = TorchMFM(1, 48, 5, 1, 2)
    self.block1 = nn.Sequential(TorchResblock(48))
    self.group1 = TorchGroup(48, 96)
    self.block2 = nn.Sequential(*[TorchResblock(96) for _ in range(2)])
    self.group2 = TorchGroup(96, 192)
    self.block3 = nn.Sequential(*[TorchResblock(192) for _ in range(3)])
    self.group3 = TorchGroup(192, 128)
    self.block4 = nn.Sequential(*[TorchResblock(128) for _ in range(4)])
    self.group4 = TorchGroup(128, 128)
    self.fc = nn.Linear(final_size * final_size * 128, 256)
    self.fc2 = nn.Linear(256, num_classes, bias=False)

  def forward(self, x):
    pool = lambda x: F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
    x = pool(self.conv1(x))
    x = pool(self.group1(self.block1(x)))
    x = pool(self.group2(self.block2(x)))
    x = self.group3(self.block3(x))
    x = pool(self.group4(self.block4(x)))
    fc = self.fc(torch.flatten(x, 1))
    return self.fc2(fc), fc


def test_lightcnn29_v2_matches_reference_and_skips_classifier():
  torch.manual_seed(3)
  # Residual sums without normalisation grow with depth: a gain below 1 keeps outputs O(1).
  reference = he_initialize(TorchLightCNN29v2(final_size=2, num_classes=7), gain=0.4).eval()
  state_dict = {f"module.{key}": value for key, value in reference.state_dict().items()}  # DataParallel
  variables = lightcnn.convert_lightcnn(common.state_dict_to_numpy(state_dict), LightCNN29(), image_size=32)
  images, _ = images_pair((2, 32, 32, 1), seed=3)
  gray_unit = torch.from_numpy(((images + 1) / 2).transpose(0, 3, 1, 2).copy())  # ToTensor() range
  with torch.no_grad():
    logits, expected = reference(gray_unit)
  difference = max_abs_difference(jax.jit(LightCNN29().apply)(variables, images), expected)
  print("LightCNN-29 v2 max abs difference (fc features):", difference, "largest |output|:",
        float(expected.abs().max()))
  assert difference <= TOLERANCE
  with_classifier = LightCNN29(num_classes=7)
  variables = lightcnn.convert_lightcnn(common.state_dict_to_numpy(state_dict), with_classifier, image_size=32)
  _, flax_logits = jax.jit(with_classifier.apply)(variables, images)
  assert max_abs_difference(flax_logits, logits) <= TOLERANCE


# --------------------------------------------------------------------- LPIPS


class TorchNetLinLayer(nn.Module):
  def __init__(self, channels):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

  def forward(self, x):
    return self.model(x)


class TorchLPIPS(nn.Module):
  """lpips.LPIPS(net="vgg", version="0.1") forward with its parameter names."""

  def __init__(self):
    super().__init__()
    self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])
    self.vgg = TorchVGG(16)
    for index, channels in enumerate((64, 128, 256, 512, 512)):
      setattr(self, f"lin{index}", TorchNetLinLayer(channels))

  def forward(self, first, second):
    features = [self.vgg.named_features((x - self.shift) / self.scale) for x in (first, second)]
    total = 0
    for index, layer in enumerate(("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")):
      a, b = (f[layer] / (torch.sqrt(torch.sum(f[layer]**2, dim=1, keepdim=True)) + 1e-10) for f in features)
      total = total + getattr(self, f"lin{index}")((a - b) ** 2).mean([2, 3], keepdim=True)
    return total.flatten()


def test_lpips_matches_reference():
  generator = torch.manual_seed(4)
  reference = he_initialize(TorchLPIPS()).eval()
  for index in range(5):
    layer = getattr(reference, f"lin{index}").model[1]
    layer.weight.data = torch.rand(layer.weight.shape, generator=generator)
  lin = {key: value for key, value in reference.state_dict().items() if key.startswith("lin")}
  vgg16 = {key[len("vgg."):]: value for key, value in reference.state_dict().items() if key.startswith("vgg.")}
  variables = lpips.convert_lpips(common.state_dict_to_numpy(lin), common.state_dict_to_numpy(vgg16))
  first, first_torch = images_pair((2, 32, 32, 3), seed=4)
  second, second_torch = images_pair((2, 32, 32, 3), seed=5)
  with torch.no_grad():
    expected = reference(first_torch, second_torch)
  difference = max_abs_difference(lpips_distance(variables, first, second), expected)
  print("LPIPS (VGG) max abs difference:", difference, "distances", expected.numpy())
  assert difference <= TOLERANCE
  np.testing.assert_allclose(np.asarray(lpips_distance(variables, first, first)), 0.0, atol=1e-6)


# --------------------------------------------------------------------- errors and files


def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped_keys():
  torch.manual_seed(5)
  stage_sizes, widths = (1, 1, 1, 1), (4, 4, 8, 8)
  state_dict = common.state_dict_to_numpy(TorchIResNet(stage_sizes, widths, 8, 2).state_dict())
  del state_dict["layer2.0.conv1.weight"]
  state_dict["layer9.0.conv1.weight"] = np.zeros((4, 4, 3, 3), np.float32)
  state_dict["fc.bias"] = np.zeros((9,), np.float32)
  model = ResNetFace(stage_sizes=stage_sizes, widths=widths, embedding_dim=8)
  with pytest.raises(common.CheckpointMismatchError) as error:
    arcface.convert_arcface(state_dict, model, image_size=32)
  message = str(error.value)
  assert "nothing was loaded" in message
  assert "1 missing key(s):\n  layer2.0.conv1.weight" in message
  assert "1 unexpected key(s):\n  layer9.0.conv1.weight" in message
  assert "1 mis-shaped key(s):\n  fc.bias: checkpoint shape (9,)" in message


def test_load_torch_state_dict_reads_training_checkpoint_file(tmp_path):
  torch.manual_seed(6)
  reference = TorchIResNet((1, 1, 1, 1), (4, 4, 8, 8), 8, 2).eval()
  path = tmp_path / "checkpoint.pth.tar"
  torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
  model = ResNetFace(stage_sizes=(1, 1, 1, 1), widths=(4, 4, 8, 8), embedding_dim=8)
  variables = arcface.load_arcface(str(path), model, image_size=32)
  images, images_torch = images_pair((1, 32, 32, 3), seed=6)
  with torch.no_grad():
    expected = reference(images_torch)
  assert max_abs_difference(jax.jit(model.apply)(variables, images), expected) <= TOLERANCE
  with pytest.raises(FileNotFoundError, match="No checkpoint at"):
    common.load_torch_state_dict(str(tmp_path / "absent.pth"))

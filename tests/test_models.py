"""Every architecture in the registry runs through the same contract (after segmentation_models_pytorch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from petseg.checkpoint import Checkpoint, load_model, save_checkpoint
from petseg.errors import CheckpointError
from petseg.models import MODELS, ResNet34UNet, UNet, build_model, count_parameters
from petseg.models.nets.parts import CentreTapConv2d, use_centre_taps
from petseg.models.nets.resnet34_unet import ResNet34_Weights


class ModelContract:
    """The checks each registered model must pass. Subclasses name the model and its expectations."""

    name: str
    small_params: dict  # a cheap configuration for the behavioural checks
    full_params: dict  # the reference configuration
    expected_parameters: int  # for full_params, 3 input channels and 1 output
    size_multiple: int
    valid_sizes = [(32, 32), (64, 96), (96, 64)]

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        torch.manual_seed(0)
        return build_model(cls.name, **cls.small_params)

    def test_parameter_count(self):
        model = build_model(self.name, **self.full_params)
        assert count_parameters(model) == self.expected_parameters

    @pytest.mark.parametrize("height,width", valid_sizes)
    def test_forward_returns_logits_of_input_size(self, model, height, width):
        model.eval()
        with torch.inference_mode():
            out = model(torch.rand(2, 3, height, width))
        assert out.shape == (2, 1, height, width)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()

    def test_backward_reaches_every_parameter(self, model):
        model.train()
        model.zero_grad()
        out = model(torch.rand(2, 3, 32, 32))
        torch.nn.functional.binary_cross_entropy_with_logits(out, (torch.rand_like(out) > 0.5).float()).backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
        assert missing == []

    def test_channels_last_gives_the_same_output(self, model):
        model.eval()
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            expected = model(x)
            model_cl = model.to(memory_format=torch.channels_last)
            got = model_cl(x.contiguous(memory_format=torch.channels_last))
            model.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)

    def test_size_error_says_which_sizes_work(self, model):
        bad = self.size_multiple + self.size_multiple // 2
        with pytest.raises(ValueError, match=f"multiples of {self.size_multiple}"):
            model(torch.rand(1, 3, bad, 64))

    def test_rejects_wrong_channel_count(self, model):
        with pytest.raises(ValueError, match="N x 3 x H x W"):
            model(torch.rand(1, 1, 64, 64))

    def test_input_normalisation_is_inside_the_model(self, model):
        # the model's first layer sees ImageNet-normalised values: a mid-grey [0, 1] image is near zero mean
        assert hasattr(model, "normalize")
        grey = torch.full((1, 3, 4, 4), 0.45)
        assert model.normalize(grey).abs().max() < 0.5

    def test_save_and_load_round_trip(self, model, tmp_path: Path):
        model.eval()
        path = tmp_path / "model.pt"
        save_checkpoint(
            path,
            Checkpoint(
                model_name=self.name, model_params=self.small_params, model=model.state_dict(), image_size=64, epoch=1
            ),
        )
        loaded, checkpoint = load_model(path)
        assert checkpoint.model_name == self.name
        x = torch.rand(2, 3, 64, 64)
        with torch.inference_mode():
            torch.testing.assert_close(loaded(x), model(x))


def test_every_registered_model_has_a_contract():
    """A model added to the registry without its ModelContract subclass below is reported."""
    assert sorted(contract.name for contract in ModelContract.__subclasses__()) == sorted(MODELS)


class TestUNet(ModelContract):
    name = "unet"
    small_params = {"base_channels": 4}
    full_params = {"base_channels": 64}
    expected_parameters = 31_037_633  # the classic UNet: 31.04M
    size_multiple = 16

    def test_width_scales_with_base_channels(self):
        small = count_parameters(UNet(base_channels=8))
        assert 0.9 * (31_037_633 / 64) < small < 1.1 * (31_037_633 / 64)  # params grow with width squared


class TestResNet34UNet(ModelContract):
    name = "resnet34_unet"
    small_params = {"encoder_weights": None}
    full_params = {"encoder_weights": None}
    expected_parameters = 39_033_601  # 21.3M ResNet34 encoder + 14.2M bridge + 3.6M decoder
    size_multiple = 32

    def test_encoder_is_torchvision_resnet34(self):
        model = ResNet34UNet()
        torchvision_resnet = __import__("torchvision").models.resnet34()
        assert sum(len(block) for block in (model.layer1, model.layer2, model.layer3, model.layer4)) == 3 + 4 + 6 + 3
        encoder_params = sum(v.numel() for k, v in model.named_parameters() if k.startswith(("stem", "layer")))
        reference = sum(v.numel() for k, v in torchvision_resnet.named_parameters() if not k.startswith("fc"))
        assert encoder_params == reference


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty torch hub cache, so that weight loading reads our file and never the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_imagenet_encoder_weights_are_loaded_from_the_torch_hub_cache(torch_home: Path):
    # a stand-in for the ImageNet file, placed where torchvision looks before it downloads
    torch.manual_seed(123)
    reference = __import__("torchvision").models.resnet34()
    filename = ResNet34_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    torch.save(reference.state_dict(), torch_home / filename)
    model = build_model("resnet34_unet", encoder_weights="imagenet")
    torch.testing.assert_close(model.layer4[2].conv2.weight, reference.layer4[2].conv2.weight)
    torch.testing.assert_close(model.stem[0].weight, reference.conv1.weight)


def test_unfetchable_imagenet_weights_are_a_clear_error(torch_home: Path):
    filename = ResNet34_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    (torch_home / filename).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="ImageNet ResNet34 weights") as info:
        build_model("resnet34_unet", encoder_weights="imagenet")
    assert "encoder_weights: null" in str(info.value)


def test_build_model_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unet, resnet34_unet"):
        build_model("segformer")


def test_build_model_ignores_training_keys_and_rejects_unknown_options():
    assert isinstance(build_model("unet", base_channels=4, batch_size=8), UNet)
    with pytest.raises(ValueError, match="bad options for model 'unet'"):
        build_model("unet", base_channels=4, depth=5)


@pytest.mark.parametrize("side", [1, 2, 5])
@pytest.mark.parametrize("groups", [1, 4])
def test_centre_tap_conv_is_the_same_function_and_gradient_as_a_3x3_conv(side: int, groups: int):
    """On a 1 x 1 map the centre tap alone must give nn.Conv2d's output and weight gradient (outer taps 0)."""
    torch.manual_seed(0)
    reference = torch.nn.Conv2d(8, 12, kernel_size=3, padding=1, groups=groups).double()
    fast = torch.nn.Conv2d(8, 12, kernel_size=3, padding=1, groups=groups).double()
    fast.load_state_dict(reference.state_dict())
    assert use_centre_taps(fast) == 1 and isinstance(fast, CentreTapConv2d)
    inputs = torch.randn(3, 8, side, side, dtype=torch.float64)
    upstream = torch.randn(3, 12, side, side, dtype=torch.float64)
    grads = []
    for conv in (reference, fast):
        x = inputs.clone().requires_grad_(True)
        out = conv(x)
        (out * upstream).sum().backward()
        grads.append((out.detach(), x.grad, conv.weight.grad, conv.bias.grad))
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if side == 1:
        outer = grads[1][2].clone()
        outer[:, :, 1, 1] = 0
        assert not outer.any()  # only the centre tap ever meets data on a 1 x 1 map


def test_use_centre_taps_leaves_other_convs_alone():
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1),  # its 1 x 1 output reads real pixels
        torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(4, 4, 1),
        torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2),
    )
    assert use_centre_taps(convs) == 1
    assert [type(conv) is CentreTapConv2d for conv in convs] == [True, False, False, False, False]


def test_resnet34_unet_at_32_px_is_the_plain_conv_model_with_centre_taps():
    """Same state_dict as the model with plain convs, and the same output and gradients at 32 px (1 x 1 maps)."""
    torch.manual_seed(0)
    model = ResNet34UNet().double()
    assert isinstance(model.bridge[0], CentreTapConv2d) and isinstance(model.layer4[1].conv1, CentreTapConv2d)
    assert not isinstance(model.layer4[0].conv1, CentreTapConv2d)  # stride 2: its 1 x 1 output reads real pixels
    plain = ResNet34UNet().double()
    for module in plain.modules():
        if type(module) is CentreTapConv2d:
            module.__class__ = torch.nn.Conv2d
    plain.load_state_dict(model.state_dict(), strict=True)
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    outputs = []
    for net in (plain, model):
        net.eval().zero_grad()
        out = net(images)
        out.sum().backward()
        outputs.append((out.detach(), net.bridge[0].weight.grad, net.layer4[1].conv1.weight.grad))
    for expected, got in zip(*outputs):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

"""Every registered architecture builds, runs and has the published size."""

import pytest
import torch

from cnnserve.training.architectures import create_model, list_models

# Published parameter counts for the classic classification-only configurations.
PUBLISHED = {
    ("vgg16", 3, 224, 1000): 138_357_544,
    ("resnet18", 3, 224, 1000): 11_689_512,
    ("resnet50", 3, 224, 1000): 25_557_032,
    ("lenet5", 1, 32, 10): 61_706,
    # torchvision's definitions (torchvision/models/alexnet.py and googlenet.py): the single-tower AlexNet, and
    # GoogLeNet without auxiliary heads with the 3x3 kernels torchvision keeps in the "5x5" branches
    ("alexnet", 3, 224, 1000): 61_100_840,
    ("googlenet", 3, 224, 1000): 6_624_904,
}
OPTIONS = {"googlenet": {"fifth_kernel": 3}}


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family():
    names = list_models()
    for expected in ["lenet5", "alexnet", "vgg11", "vgg13_bn", "vgg16", "vgg19_bn", "googlenet", "resnet18", "resnet34",
                     "resnet50"]:
        assert expected in names


def test_unknown_architecture_is_named_in_the_error():
    with pytest.raises(KeyError, match="no-such-net"):
        create_model("no-such-net", num_classes=10, in_channels=3, input_size=32)


@pytest.mark.parametrize(("name", "channels", "size", "classes"), list(PUBLISHED))
def test_classic_configurations_match_published_parameter_counts(name, channels, size, classes):
    model = create_model(name, num_classes=classes, in_channels=channels, input_size=size, box_head=False,
                         **OPTIONS.get(name, {}))
    published = PUBLISHED[(name, channels, size, classes)]
    assert abs(parameters(model) - published) / published < 0.01


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels", [1, 3])
def test_both_heads_have_the_contract_shapes(name, channels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, input_size=32).eval()
    with torch.inference_mode():
        logits, boxes = model(torch.rand(3, channels, 32, 32))
    assert logits.shape == (3, 7)
    assert boxes.shape == (3, 4)
    assert bool(((boxes >= 0) & (boxes <= 1)).all())


def test_classification_only_model_has_no_box_output():
    model = create_model("resnet18", num_classes=5, in_channels=3, input_size=64, box_head=False).eval()
    with torch.inference_mode():
        logits, boxes = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 5) and boxes is None


def test_vgg_slim_classifier_option_shrinks_the_model():
    classic = create_model("vgg11_bn", num_classes=10, in_channels=3, input_size=64)
    slim = create_model("vgg11_bn", num_classes=10, in_channels=3, input_size=64, pool_size=1, classifier_width=256)
    assert parameters(slim) < parameters(classic) / 10


def test_googlenets_auxiliary_heads_speak_only_in_training():
    model = create_model("googlenet", num_classes=10, in_channels=3, input_size=64, aux_classifiers=True)
    model.train()
    model(torch.rand(2, 3, 64, 64))
    assert [a.shape for a in model.backbone.aux_logits] == [(2, 10), (2, 10)]
    model.eval()
    with torch.inference_mode():
        model(torch.rand(2, 3, 64, 64))
    assert model.backbone.aux_logits == []


def test_alexnet_takes_local_response_normalization_as_an_option():
    plain = create_model("alexnet", num_classes=10, in_channels=3, input_size=64)
    with_lrn = create_model("alexnet", num_classes=10, in_channels=3, input_size=64, lrn=True)
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in with_lrn.modules()) == 2
    assert not any(isinstance(m, torch.nn.LocalResponseNorm) for m in plain.modules())


def test_alexnet_features_keep_their_spread_at_initialization():
    # From PyTorch's default initialization the spread across a batch fell to about 0.003 by the last stage
    # (architectures/alexnet.py) and training stalled; with He initialization it is 0.39.
    torch.manual_seed(0)
    model = create_model("alexnet", num_classes=10, in_channels=3, input_size=64, classifier_width=256)
    with torch.inference_mode():
        features = model.backbone(torch.randn(64, 3, 64, 64))
    assert features.std(0).mean() > 0.1

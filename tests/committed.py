"""The committed models as the tests expect them: ``models/<name>/<VERSIONS[name]>``, input (channels, size)."""

VERSIONS = {"lenet5-digits": 4, "resnet18-digits": 3, "vgg11-digits": 3}
INPUTS = {"lenet5-digits": (1, 32), "resnet18-digits": (3, 64), "vgg11-digits": (3, 48)}
NAMES = list(INPUTS)

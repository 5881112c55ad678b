"""Student / teacher model zoo of the DIST experiments (CIFAR-100 family, MobileNetV1, torchvision/timm)."""
from .builder import build_model, extract_state_dict, list_models  # noqa: F401

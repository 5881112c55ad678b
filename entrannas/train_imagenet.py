"""ImageNet evaluation (quark0/darts ``train_imagenet.py``): the mobile network ``NetworkImageNet`` (14 cells,
C=48), label smoothing 0.1, RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2); test Resize(256) +
CenterCrop(224). The loop is ``train.run_training`` with the ImageNet schedule chosen by ``lr_scheduler``."""
import torchvision.transforms as T

from model import NetworkImageNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_transforms(image_size=224, color_jitter=True, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    train = [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
    if color_jitter:
        train.append(T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
    train += [T.ToTensor(), T.Normalize(mean, std)]
    test = [T.Resize(int(round(image_size * 256 / 224))), T.CenterCrop(image_size), T.ToTensor(),
            T.Normalize(mean, std)]
    return T.Compose(train), T.Compose(test)


def build_model(args, num_classes, genotype):
    return NetworkImageNet(args.init_channels, num_classes, args.layers, args.auxiliary, genotype,
                           share_features=args.share_features)

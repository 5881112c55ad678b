"""Networks: the Channel-Bench-Macro spaces (``models.cbm``) and ImageNet backbones (``models.imagenet``)."""

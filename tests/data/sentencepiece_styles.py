"""SentencePiece-kind tokenizers made here for tests/data/check_tokenizers_with_python.py.

No downloads: tiny models are trained on the check's corpus.
- tokenizer.model files (pip's `sentencepiece` trainer, byte_fallback): "spm_bpe" (BPE, Llama-2's
  settings: identity normalization, extra whitespace kept) and "spm_unigram" (unigram, the
  default nmt_nfkc normalization), each checked as Megatron's SentencePieceTokenizer and
  Llama2Tokenizer against `sentencepiece` itself (Megatron's tokenize / detokenize, below).
- tokenizer.json files (pip's `tokenizers`): "hf_llama2" (spm_bpe converted as transformers'
  LlamaConverter does with legacy=True: Prepend + Replace normalizer, no pre-tokenizer),
  "hf_llama2_metaspace" (the same with legacy=False: Metaspace(prepend_scheme="first",
  split=False)), and "hf_metaspace" (a BPE trained by `tokenizers` with byte_fallback and
  Metaspace(prepend_scheme="always", split=True), its byte tokens appended to the vocabulary).
"""
import json
import os

import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

SPM_MODELS = ["spm_bpe", "spm_unigram"]
HF_STYLES = ["hf_llama2", "hf_llama2_metaspace", "hf_metaspace"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def train_spm(corpus, folder, model_type, vocab_size, llama_settings):
    os.makedirs(folder, exist_ok=True)
    text_file = os.path.join(folder, "corpus.txt")
    with open(text_file, "w", encoding="utf-8") as f:
        for doc in corpus:  # sentencepiece reads lines; keep them short
            for line in doc.splitlines():
                if line.strip():
                    f.write(line[:2000] + "\n")
    options = dict(input=text_file, model_prefix=os.path.join(folder, "tokenizer"),
                   model_type=model_type, vocab_size=vocab_size, byte_fallback=True,
                   character_coverage=0.9995, minloglevel=2, num_threads=2,
                   user_defined_symbols=["<CLS>"])
    if llama_settings:
        options.update(normalization_rule_name="identity", remove_extra_whitespaces=False,
                       split_digits=True, allow_whitespace_only_pieces=True, pad_id=3,
                       user_defined_symbols=[])
    spm.SentencePieceTrainer.train(**options)
    os.remove(text_file)
    os.remove(os.path.join(folder, "tokenizer.vocab"))
    return os.path.join(folder, "tokenizer.model")


class MegatronSentencePiece:
    """Megatron's _SentencePieceTokenizer (vocab_extra_ids=0) and _Llama2Tokenizer, as in
    megatron/training/tokenizer/tokenizer.py."""

    def __init__(self, model_file, llama2):
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.llama2 = llama2
        self.vocab = {self.sp.id_to_piece(i): i for i in range(len(self.sp))}
        self.special = {}
        if llama2:
            self.bos, self.eos, self.pad = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
            self.eod = self.eos
            return

        def add(t):
            if t not in self.vocab:
                self.vocab[t] = len(self.vocab)
            self.special[t] = self.vocab[t]
            return self.vocab[t]

        def piece(i, fallback):
            try:
                return self.sp.id_to_piece(i)
            except IndexError:
                return fallback
        add("<CLS>"), add("<SEP>")
        self.eod = add("<EOD>")
        add("<MASK>")
        self.pad = add(piece(self.sp.pad_id(), "<PAD>"))
        self.bos = add(piece(self.sp.bos_id(), "<BOS>"))
        self.eos = add(piece(self.sp.eos_id(), "<EOS>"))
        self.inv_special = {i: t for t, i in self.special.items()}

    def vocab_size(self):
        return len(self.sp) if self.llama2 else len(self.vocab)

    def encode(self, text):  # moecore's encode(): Megatron's tokenize without Llama-2's bos
        if self.llama2:
            return self.sp.encode(text)
        ids, idx = [], 0
        while True:
            indices = {}
            for token in self.special:
                try:
                    indices[token] = text[idx:].index(token)
                except ValueError:
                    continue
            if not indices:
                break
            token = min(indices, key=indices.get)
            ids += self.sp.encode_as_ids(text[idx:idx + indices[token]])
            ids.append(self.special[token])
            idx += indices[token] + len(token)
        return ids + self.sp.encode_as_ids(text[idx:])

    def tokenize(self, text):  # Megatron's tokenize: what preprocessing stores
        return [self.bos] + self.sp.encode(text) if self.llama2 else self.encode(text)

    def detokenize(self, ids):
        if self.llama2:
            return self.sp.decode_ids(ids)
        text, last = "", 0
        for i, token_id in enumerate(ids):
            if token_id in self.inv_special:
                text += self.sp.decode_ids(ids[last:i]) + " " + self.inv_special[token_id] + " "
                last = i + 1
        return text + self.sp.decode_ids(ids[last:])


def write_spm_expected(model_file, texts, rng, folder):
    """expected.json: per Megatron type, ids of every text, documents, decodes of random ids."""
    expected = {"sentencepiece_version": spm.__version__}
    for name, llama2 in [("SentencePieceTokenizer", False), ("Llama2Tokenizer", True)]:
        tok = MegatronSentencePiece(model_file, llama2)
        pieces = len(tok.sp)
        decode = []
        for _ in range(300):
            ids = [rng.randrange(pieces) for _ in range(rng.randrange(40))]
            if not llama2 and rng.random() < 0.5 and ids:  # special ids among them
                ids[rng.randrange(len(ids))] = rng.choice(list(tok.special.values()))
            decode.append({"ids": ids, "text": tok.detokenize(ids)})
        expected[name] = {
            "encode": [tok.encode(t) for t in texts],
            "encode_document": [tok.tokenize(t) for t in texts[:50]],
            "decode": decode,
            "vocab_size": tok.vocab_size(), "eod": tok.eod,
            "bos": tok.bos, "eos": tok.eos, "pad": tok.pad,
        }
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)


def llama_merges(sp):
    """transformers' SentencePieceExtractor.extract(vocab_scores): every split of a piece into
    two pieces, by the piece's score (highest first), then the ids of the halves."""
    vocab = {sp.id_to_piece(i): i for i in range(len(sp))}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(len(sp))}
    merges = []
    for merge, score in scores.items():
        local = [(merge[:k], merge[k:], score) for k in range(1, len(merge))
                 if merge[:k] in vocab and merge[k:] in vocab]
        merges += sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]))
    merges.sort(key=lambda m: m[2], reverse=True)
    return vocab, [(a, b) for a, b, _ in merges]


def llama_tokenizer_json(model_file, legacy):
    """transformers' LlamaConverter on a SentencePiece BPE model."""
    sp = spm.SentencePieceProcessor(model_file=model_file)
    vocab, merges = llama_merges(sp)
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in ["<unk>", "<s>", "</s>"]])
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def metaspace_tokenizer(corpus, vocab_size):
    """A BPE trained by tokenizers with byte_fallback and Metaspace, byte tokens appended."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=400, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    config = json.loads(tok.to_str())
    vocab = config["model"]["vocab"]
    for token in BYTE_TOKENS:
        if token not in vocab:
            vocab[token] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(config))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                     decoders.Metaspace(replacement="▁", prepend_scheme="always",
                                                        split=True)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                       special_tokens=[("<s>", 1), ("</s>", 2)])
    # A normalized added token (matched in the pre-tokenized text's stretches) and a special one.
    tok.add_tokens([AddedToken("<sep>", normalized=True, special=False)])
    tok.add_special_tokens([AddedToken("<|im_end|>", normalized=False, special=True, lstrip=True)])
    return tok


def build_all(corpus, folder):
    """Makes every SentencePiece-kind tokenizer under `folder`; returns (spm models, HF styles)."""
    bpe = train_spm(corpus, os.path.join(folder, "spm_bpe"), "bpe", 3000, llama_settings=True)
    train_spm(corpus, os.path.join(folder, "spm_unigram"), "unigram", 3000, llama_settings=False)
    made = {"hf_llama2": llama_tokenizer_json(bpe, legacy=True),
            "hf_llama2_metaspace": llama_tokenizer_json(bpe, legacy=False),
            "hf_metaspace": metaspace_tokenizer(corpus, 3000)}
    for name, tok in made.items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        tok.save(os.path.join(folder, name, "tokenizer.json"))
        with open(os.path.join(folder, name, "tokenizer_config.json"), "w") as f:
            json.dump({"eos_token": "</s>"}, f)
    return SPM_MODELS, HF_STYLES

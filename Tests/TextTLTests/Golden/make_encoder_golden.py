#!/usr/bin/env python3
"""Reference outputs of all-MiniLM-L6-v2 from Hugging Face `transformers` BertModel on Debian's PyTorch 1.13,
for TextTLTests/BERTEncoderTests.

    /usr/bin/python3 -m venv --system-site-packages /tmp/txt-venv     # sees Debian's python3-torch 1.13
    /tmp/txt-venv/bin/pip install 'transformers==4.40.2' 'tokenizers<0.20' safetensors
    /tmp/txt-venv/bin/python Tests/TextTLTests/Golden/make_encoder_golden.py   # from the repository root

Reads Models/all-MiniLM-L6-v2 (scripts/fetch-models) and Fixtures/text/**/*.tsv; writes encoder.json next to
this script. Floats are base64 of little-endian float32.
- "texts": fixture sentences (the first 12 rows of every TSV) and adversarial texts (empty, emoji, CJK,
  control characters, accents, special tokens typed in the text, a text longer than 128 tokens), encoded with
  truncation to 128 tokens and run in padded batches of 8 with the attention mask; "pooled" is the mean of
  the last hidden state over the real tokens (sentence-transformers' pooling, before its L2 normalisation).
- "hidden": for one sentence, every token's hidden state ([T, 384]) through blocks 1 (the embeddings),
  2 (layer 0), 5 (layer 3) and 7 (the last layer), keyed by block count as in `forward(_:through:)`.
- "tiny": another BERT shape through the same loader: a random BertForSequenceClassification (2 layers, hidden
  32, 4 heads, feed-forward 48, LayerNorm eps 1e-5, 40 positions, vocabulary of the first 1000 vocab.txt
  lines) saved by transformers with safe_serialization into Golden/tiny-bert/ (keys carry the "bert." prefix
  and a classifier beside them); "pooled" for random id sequences of several lengths.
- "gradients": the top two layers trainable, L = Σ normalize(pooled) ⊙ R over a padded batch of 4 texts;
  dL/d of a few parameters (whole bias/LayerNorm vectors, the first 4 rows of weight matrices).
"""
import base64
import glob
import json
import os
import struct
import sys

import torch
import transformers
from transformers import BertModel, BertTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODEL = os.path.join(ROOT, "Models", "all-MiniLM-L6-v2")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "encoder.json")

ADVERSARIAL = [
    "This is an example sentence",
    "", " ", "Café déjà vu, naïve résumé", "Straße STRASSE", "I love it 😍👍🏽🎉", "👨‍👩‍👧‍👦 family",
    "我爱北京天安门", "日本語のテキストです。カタカナ、ひらがな", "混合mixed文字text", "tab\there\nnew\r\nline",
    "null\u0000char", "zero\u200bwidth", "[CLS] inside [SEP] text [MASK]", "[UNK][PAD]", "a" * 101,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism", "Hello мир שלום عالم नमस्ते ไทย",
    "!!!???...", "@user #hashtag http://example.com/path?q=1&r=2", "$1,234.56", "soooooo goooood",
    "not good at all", "not bad at all", "lol " * 200,
]


def f32(values):
    flat = torch.as_tensor(values, dtype=torch.float32).flatten().tolist()
    return base64.b64encode(struct.pack("<%df" % len(flat), *flat)).decode("ascii")


def read_tsv_texts(path):
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    rows = [r[:-1] if r.endswith(b"\r") else r for r in data.split(b"\n")]
    rows = [r.decode("utf-8").split("\t") for r in rows if r]
    col = rows[0].index("text")
    return [r[col] for r in rows[1:]]


def pooled(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=torch.zeros_like(batch["input_ids"])).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (out * mask).sum(1) / mask.sum(1)


def main():
    if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
        sys.exit(f"{MODEL} is missing: run scripts/fetch-models first")
    torch.set_num_threads(2)
    tok = BertTokenizerFast.from_pretrained(MODEL)
    model = BertModel.from_pretrained(MODEL, add_pooling_layer=False).eval()

    texts = list(ADVERSARIAL)
    for path in sorted(glob.glob(os.path.join(ROOT, "Fixtures", "text", "**", "*.tsv"), recursive=True)):
        texts += read_tsv_texts(path)[:12]

    records = []
    with torch.no_grad():
        for start in range(0, len(texts), 8):
            chunk = texts[start:start + 8]
            batch = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            p = pooled(model, batch)
            for i, t in enumerate(chunk):
                ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
                records.append({"text": t, "ids": ids, "pooled": f32(p[i])})
    sanity = torch.nn.functional.normalize(torch.frombuffer(bytearray(base64.b64decode(records[0]["pooled"])),
                                                            dtype=torch.float32), dim=0)[:5]
    print("sanity, normalised:", [round(v, 4) for v in sanity.tolist()])

    sentence = "A generous, inspiring film that unfolds with grace and humor."
    with torch.no_grad():
        batch = tok([sentence], return_tensors="pt")
        states = model(**batch, output_hidden_states=True).hidden_states
    hidden = {"text": sentence, "ids": batch["input_ids"][0].tolist(),
              "through_blocks": {str(k): f32(states[k - 1][0]) for k in (1, 2, 5, 7)}}

    # Gradients through the top two layers.
    for p in model.parameters():
        p.requires_grad = False
    for layer in model.encoder.layer[-2:]:
        for p in layer.parameters():
            p.requires_grad = True
    grad_texts = ["What a wonderful, moving film.", "Dull and far too long", "It broke after two days; avoid.",
                  "The remote works fine"]
    batch = tok(grad_texts, padding=True, return_tensors="pt")
    gen = torch.Generator().manual_seed(7)
    r = torch.rand(4, 384, generator=gen) + 0.5
    loss = (torch.nn.functional.normalize(pooled(model, batch), dim=1) * r).sum()
    loss.backward()
    params = dict(model.named_parameters())
    names = ["encoder.layer.5.attention.self.query.bias", "encoder.layer.5.attention.self.key.weight",
             "encoder.layer.5.attention.output.LayerNorm.weight", "encoder.layer.5.output.dense.weight",
             "encoder.layer.4.intermediate.dense.bias", "encoder.layer.4.attention.self.value.weight",
             "encoder.layer.4.attention.self.query.weight", "encoder.layer.4.output.LayerNorm.bias"]
    grads = {}
    for n in names:
        g = params[n].grad
        if g.dim() == 2:
            g = g[:4]
        grads[n] = {"shape": list(g.shape), "values": f32(g)}
    gradients = {"texts": grad_texts, "r": f32(r), "loss": loss.item(), "tensors": grads}

    # Another BERT shape, saved the way fine-tuned classification checkpoints are.
    tiny_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-bert")
    torch.manual_seed(3)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, layer_norm_eps=1e-5,
                                     initializer_range=0.3, hidden_act="gelu")
    classifier = transformers.BertForSequenceClassification(config).eval()
    classifier.save_pretrained(tiny_dir, safe_serialization=True)
    with open(os.path.join(MODEL, "vocab.txt"), encoding="utf-8") as src:
        lines = src.read().split("\n")[:1000]
    with open(os.path.join(tiny_dir, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.write("\n".join(lines) + "\n")
    gen = torch.Generator().manual_seed(4)
    sequences = [[101] + torch.randint(999, 1000, (0,)).tolist() + [102]]
    for length in (5, 17, 40, 9):
        sequences.append([101] + torch.randint(104, 1000, (length - 2,), generator=gen).tolist() + [102])
    tiny = []
    with torch.no_grad():
        for ids in sequences:
            t = torch.tensor([ids])
            p = pooled(classifier.bert, {"input_ids": t, "attention_mask": torch.ones_like(t)})
            tiny.append({"ids": ids, "pooled": f32(p[0])})

    with open(OUT, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "max_length": 128,
                   "texts": records, "hidden": hidden, "gradients": gradients, "tiny": tiny}, f, ensure_ascii=True, indent=0)
    print(f"wrote {OUT}: {len(records)} texts")


if __name__ == "__main__":
    main()

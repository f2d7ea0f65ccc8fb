#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the real files in tests/data and configs/ (small
excerpts, so the committed corpus stays a few hundred KB). Run from the repository root; the .safetensors
fixture shards must be unpacked (any cmake configure does that)."""
import glob
import json
import os
import random
import struct
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
OUT = os.path.join(ROOT, "fuzz", "corpus")
SIZES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1,
         "F8_E4M3": 1, "F8_E5M2": 1}


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(path):
    with open(path, "rb") as f:
        return f.read()


def safetensors(tensors, rng, metadata=True):
    """tensors: [(name, dtype, shape)] -> file bytes with consistent offsets and random data."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    for name, dt, shape in tensors:
        n = SIZES[dt]
        for s in shape:
            n *= s
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes(rng.getrandbits(8) for _ in range(n))
    h = json.dumps(header, separators=(",", ":"))
    h += " " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h.encode() + data


def header_of(path):
    b = read(path)
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n])


def main():
    rng = random.Random(1)
    # safetensors: the tensor names/dtypes/ranks of the fixture shards, shapes shrunk to at most 4 per dim.
    for i, path in enumerate(sorted(glob.glob(os.path.join(DATA, "fixtures", "*", "model-*.safetensors")))):
        h = header_of(path)
        ts = [(k, v["dtype"], [min(s, 4) for s in v["shape"]]) for k, v in h.items() if k != "__metadata__"][:6]
        put("safetensors", f"fixture_{i}.safetensors", safetensors(ts, rng))
    put("safetensors", "all_dtypes.safetensors",
        safetensors([(f"t.{dt}", dt, [2, 3]) for dt in SIZES] + [("scalar", "F32", []), ("empty", "BF16", [0, 5])],
                    rng, metadata=False))
    put("safetensors", "empty.safetensors", safetensors([], rng))
    # sharded index: the fixtures' own index files.
    for name in ("hy-dense-tiny", "hy-moe-tiny"):
        put("safetensors_index", f"{name}.json", read(os.path.join(DATA, "fixtures", name, "model.safetensors.index.json")))
    # config.json
    put("model_config", "hy-dense-tiny.json", read(os.path.join(DATA, "fixtures", "hy-dense-tiny", "config.json")))
    put("model_config", "hy-moe-tiny.json", read(os.path.join(DATA, "fixtures", "hy-moe-tiny", "config.json")))
    put("model_config", "hy-a13b.json", read(os.path.join(DATA, "tokenizers", "hy-a13b", "config.json")))
    # run configs: the example YAMLs.
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "examples", "*.yaml"))):
        put("run_config", os.path.basename(path), read(path))
    # tokenizer.json: the fixture tokenizer cut to the 256 byte tokens, its first 300 merges and the added tokens
    # (renumbered so the ids stay dense).
    t = json.load(open(os.path.join(DATA, "fixtures", "hy-dense-tiny", "tokenizer.json"), encoding="utf-8"))
    vocab = t["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    small = {tok: i for i, (tok, _) in enumerate(by_id[:256])}
    merges = []
    for m in t["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in small and b in small and len(merges) < 300:
            merges.append(m)
            if a + b not in small:
                small[a + b] = len(small)
    t["model"]["vocab"] = small
    t["model"]["merges"] = merges
    added = []
    for k, a in enumerate(t["added_tokens"][:12]):
        a = dict(a)
        a["id"] = len(small) + k
        added.append(a)
    t["added_tokens"] = added
    put("bpe_tokenizer", "hy-dense-tiny-small.json", json.dumps(t, ensure_ascii=False))
    t2 = dict(t)
    t2["normalizer"] = {"type": "NFC"}
    t2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    put("bpe_tokenizer", "bytelevel-nfc.json", json.dumps(t2, ensure_ascii=False))
    # hy.tiktoken: the first 1000 ranks of the A13B file (every single byte is among them).
    lines = read(os.path.join(DATA, "tokenizers", "hy-a13b", "hy.tiktoken")).split(b"\n")
    put("tiktoken", "hy-a13b-1000.tiktoken", b"\n".join(lines[:1000]) + b"\n")
    # chat templates: the fixtures' and the A13B one.
    put("chat_template", "hy-dense-tiny.jinja", read(os.path.join(DATA, "fixtures", "hy-dense-tiny", "chat_template.jinja")))
    cfg = json.load(open(os.path.join(DATA, "tokenizers", "hy-a13b", "tokenizer_config.json"), encoding="utf-8"))
    if isinstance(cfg.get("chat_template"), str):
        put("chat_template", "hy-a13b.jinja", cfg["chat_template"])
    # jsonl: short records of each shape, plus the first small lines of the ShareGPT calibration file.
    put("text_dataset", "shapes.jsonl", "\n".join([
        json.dumps({"applied_message": "<|hy_User|>hi<|hy_Assistant|>hello"}),
        json.dumps({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
                                 {"role": "assistant", "content": [{"type": "text", "text": "4"}]}]}),
        json.dumps({"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi there"}],
                    "system": "sys"}),
        json.dumps({"input": "translate: cat", "output": "chat"}),
        json.dumps({"text": "plain calibration text 123"}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": None}]}),
    ]) + "\n")
    short = [l for l in read(os.path.join(DATA, "calib", "sharegpt_gpt4_256.jsonl")).split(b"\n") if 0 < len(l) < 1500]
    put("text_dataset", "sharegpt_short.jsonl", b"\n".join(short[:4]) + b"\n")
    # images: the multimodal calibration images shrunk to a few dozen pixels (stb_image + stb_image_write through a
    # throw-away C++ helper), as RGB/RGBA/grey PNG and RGB/grey JPEG, plus palette and 16-bit PNGs written here.
    images(os.path.join(OUT, "image"))


STB_HELPER = r"""
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
int main(int argc, char** argv) {  // in out_stem w h
  int w0, h0, c0;
  unsigned char* p = stbi_load(argv[1], &w0, &h0, &c0, 3);
  if (!p) return 1;
  const int w = atoi(argv[3]), h = atoi(argv[4]);
  std::vector<unsigned char> rgb(w * h * 3), rgba(w * h * 4), grey(w * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const unsigned char* s = p + ((y * h0 / h) * w0 + x * w0 / w) * 3;
      for (int c = 0; c < 3; ++c) rgb[(y * w + x) * 3 + c] = rgba[(y * w + x) * 4 + c] = s[c];
      rgba[(y * w + x) * 4 + 3] = (unsigned char)(255 * x / (w - 1));
      grey[y * w + x] = (unsigned char)((s[0] * 299 + s[1] * 587 + s[2] * 114) / 1000);
    }
  const std::string o = argv[2];
  stbi_write_png((o + ".png").c_str(), w, h, 3, rgb.data(), w * 3);
  stbi_write_png((o + "_rgba.png").c_str(), w, h, 4, rgba.data(), w * 4);
  stbi_write_png((o + "_grey.png").c_str(), w, h, 1, grey.data(), w);
  stbi_write_jpg((o + ".jpg").c_str(), w, h, 3, rgb.data(), 70);
  stbi_write_jpg((o + "_grey.jpg").c_str(), w, h, 1, grey.data(), 80);
  FILE* f = fopen((o + ".rgb").c_str(), "wb");
  fwrite(rgb.data(), 1, rgb.size(), f);
  fclose(f);
  return 0;
}
"""


def png(path, width, height, color_type, depth, rows, plte=None):
    """A PNG with filter 0 rows (bytes per row already packed)."""
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\0" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if plte:
        out += chunk(b"PLTE", plte)
    out += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def images(d):
    import tempfile
    os.makedirs(d, exist_ok=True)
    mm = os.path.join(DATA, "calib", "multimodal")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "shrink.cpp")
        exe = os.path.join(tmp, "shrink")
        with open(src, "w") as f:
            f.write(STB_HELPER)
        subprocess.run(["c++", "-O1", "-w", src, "-o", exe], check=True)
        for name, w, h in (("canyon.jpg", 32, 24), ("0.png", 24, 16), ("boats.jpg", 12, 20)):
            stem = os.path.join(d, os.path.splitext(name)[0])
            subprocess.run([exe, os.path.join(mm, name), stem, str(w), str(h)], check=True)
        rgb = read(os.path.join(d, "0.rgb"))
        for f in glob.glob(os.path.join(d, "*.rgb")):
            os.remove(f)
    w, h = 24, 16
    # palette (8 colours from the image, 4-bit indices) and 16-bit RGB variants of 0.png's pixels
    colours = sorted(set(rgb[i:i + 3] for i in range(0, len(rgb), 3)))[:8]
    colours += [b"\0\0\0"] * (8 - len(colours))
    def nearest(px):
        return min(range(8), key=lambda k: sum((a - b) ** 2 for a, b in zip(px, colours[k])))
    idx = [nearest(rgb[i:i + 3]) for i in range(0, len(rgb), 3)]
    rows = [bytes((idx[y * w + x] << 4) | idx[y * w + x + 1] for x in range(0, w, 2)) for y in range(h)]
    png(os.path.join(d, "0_palette.png"), w, h, 3, 4, rows, plte=b"".join(colours))
    rows = [b"".join(bytes([v, v]) for v in rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h)]
    png(os.path.join(d, "0_16bit.png"), w, h, 2, 16, rows)

if __name__ == "__main__":
    main()

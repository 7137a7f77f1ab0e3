"""The dual encoder: builds from its JSON config, encodes into a normalised space, starts from the
packaged MiniLM weights, round-trips through save/load (our folders, open_clip checkpoints, HF text
folders) and freezes all but the last vision blocks.  Offline: nothing is downloaded."""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from panel2patch.model import build_model, count_parameters, list_configs, load_config, minilm_dir  # noqa: E402

torch.set_num_threads(1)
SENTENCE = "Red arrows mark the nuclei of tumour cells in the left lobe."


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def minilm():
    return build_model("tiny", init="minilm").eval()


def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_configs_build_with_the_intended_sizes():
    assert {"tiny", "base", "large"} <= set(list_configs())
    import open_clip  # noqa: F401  (imports are not the build)
    import transformers  # noqa: F401

    start = time.perf_counter()
    model = build_model("tiny")
    assert time.perf_counter() - start < 3.0
    assert count_parameters(model) < 10e6
    with torch.device("meta"):  # no memory: shapes only
        base, large = build_model("base"), build_model("large")
    assert 85e6 < count_parameters(base.visual) < 88e6  # ViT-B/16
    assert 300e6 < count_parameters(large.visual) < 306e6  # ViT-L/14
    assert 108e6 < count_parameters(base.text) < 112e6  # BERT-base (+ projection)
    assert len(large.vision_blocks()) == 24


def test_forward_shapes_and_normalised(tiny):
    tok = tiny.tokenizer()
    ids = tok([SENTENCE, "kidney", "a much longer caption " * 20])
    assert ids.shape == (3, 32) and ids.dtype == torch.long
    with torch.no_grad():
        out = tiny(images(3), ids)
    assert out["image_features"].shape == (3, 64) and out["text_features"].shape == (3, 64)
    for key in ("image_features", "text_features"):
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-4)
    assert tiny.logit_scale.requires_grad and tiny.logit_bias.requires_grad
    from PIL import Image

    pixels = tiny.image_transform()(Image.new("RGB", (300, 200), (200, 30, 30)))
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32


def test_minilm_init_loads_the_packaged_weights(minilm):
    from safetensors import safe_open
    from transformers import AutoModel, AutoTokenizer

    tok = minilm.tokenizer()
    ref_tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    token = ref_tok.convert_tokens_to_ids("nucleus")
    emb = minilm.text.transformer.embeddings.word_embeddings.weight[token]
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        packaged = f.get_tensor(key)[token]
    assert torch.equal(emb, packaged)
    cfg = load_config("tiny")  # same MiniLM architecture, random weights
    cfg["text_cfg"] = {**cfg["text_cfg"], "hf_model_name": str(minilm_dir()), "hf_config": None}
    random_emb = build_model(cfg).text.transformer.embeddings.word_embeddings.weight[token]
    assert random_emb.shape == emb.shape and not torch.allclose(random_emb, emb)

    ids = tok([SENTENCE])
    ref_ids = ref_tok([SENTENCE], padding="max_length", max_length=32, return_tensors="pt")
    assert torch.equal(ids, ref_ids["input_ids"])
    ref = AutoModel.from_pretrained(str(minilm_dir())).eval()
    with torch.no_grad():
        want = ref(**ref_ids).last_hidden_state
        mask = minilm.text.attention_mask(ids)
        got = minilm.text.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = minilm.text.pooler(minilm.text.transformer(input_ids=ids, attention_mask=mask), mask)
    assert torch.allclose(got, want, atol=1e-5)
    m = ref_ids["attention_mask"].unsqueeze(-1).float()  # sentence-transformers' mean pooling
    assert torch.allclose(pooled, (want * m).sum(1) / m.sum(1), atol=1e-5)


def _outputs(model, n=2):
    model.eval()
    with torch.no_grad():
        ids = model.tokenizer()([SENTENCE, "kidney section"][:n])
        return model.encode_image(images(n, model.image_size)), model.encode_text(ids)


def test_save_and_load_reproduce_outputs(tiny, tmp_path):
    want = _outputs(tiny)
    tiny.save_pretrained(tmp_path / "ours")
    torch.manual_seed(123)  # a different random init underneath
    loaded = build_model(None, init=f"path:{tmp_path / 'ours'}")
    for a, b in zip(want, _outputs(loaded)):
        assert torch.equal(a, b)
    assert loaded.tokenizer()([SENTENCE]).tolist() == tiny.tokenizer()([SENTENCE]).tolist()

    # a plain checkpoint file as training scripts write it (DDP "module." prefix, under state_dict)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}}, tmp_path / "ckpt.pt")
    for a, b in zip(want, _outputs(build_model("tiny", init=f"path:{tmp_path / 'ckpt.pt'}"))):
        assert torch.equal(a, b)

    # a Hugging Face text model folder: its weights go into the text tower
    tiny.text.transformer.save_pretrained(tmp_path / "hf")
    from_hf = build_model("tiny", init=f"path:{tmp_path / 'hf'}")
    for (k, v), (k2, v2) in zip(tiny.text.transformer.state_dict().items(), from_hf.text.transformer.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)

    with pytest.raises(FileNotFoundError):
        build_model("tiny", init=f"path:{tmp_path / 'missing'}")
    with pytest.raises(ValueError):  # wrong architecture for the checkpoint
        build_model("base", init=f"path:{tmp_path / 'ckpt.pt'}")


def test_loads_a_checkpoint_written_by_open_clip(tmp_path):
    """open_clip's own CustomTextCLIP (its ViT + HFTextEncoder on MiniLM) -> our model, same outputs."""
    from open_clip.model import CustomTextCLIP

    cfg = load_config("tiny")
    text_cfg = {"hf_model_name": str(minilm_dir()), "hf_tokenizer_name": str(minilm_dir()),
                "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "context_length": 32}  # fmt: skip
    torch.manual_seed(1)
    ref = CustomTextCLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=text_cfg).eval()
    torch.save(ref.state_dict(), tmp_path / "open_clip.pt")
    ours = build_model({**cfg, "text_cfg": text_cfg}, init=f"path:{tmp_path / 'open_clip.pt'}").eval()
    x, ids = images(2), ours.tokenizer()([SENTENCE, "kidney"])
    with torch.no_grad():
        assert torch.allclose(ours.encode_image(x), ref.encode_image(x, normalize=True), atol=1e-6)
        assert torch.allclose(ours.encode_text(ids), ref.encode_text(ids, normalize=True), atol=1e-6)


def test_freeze_vision_except_last():
    model = build_model("tiny")
    blocks = model.vision_blocks()
    assert len(blocks) == 4
    names = model.freeze_vision_except_last(2, train_head=False)
    assert names and all(n.startswith(("transformer.resblocks.2.", "transformer.resblocks.3.")) for n in names)
    assert count_parameters(model.visual, trainable_only=True) == sum(count_parameters(b) for b in blocks[2:])
    assert all(p.requires_grad for p in model.text.parameters())  # text tower untouched
    with_head = model.freeze_vision_except_last(1)
    assert {n.split(".")[0] for n in with_head} == {"transformer", "ln_post", "proj"}
    assert not any(n.startswith("transformer.resblocks.2.") for n in with_head)
    assert model.freeze_vision_except_last(0, train_head=False) == []
    with pytest.raises(ValueError):
        model.freeze_vision_except_last(5)
    # frozen blocks get no gradient, the trained ones do
    model.freeze_vision_except_last(1, train_head=False)
    model.encode_image(images(2)).sum().backward()
    assert blocks[0].attn.in_proj_weight.grad is None and blocks[3].attn.in_proj_weight.grad is not None


def test_export_loads_with_open_clip_and_transformers_as_a_user_would(tmp_path, monkeypatch):
    """The saved folder through open_clip's public API (``local-dir:``) and its ``text/`` through
    transformers alone give our embeddings; so does a copy elsewhere once repointed."""
    import shutil

    import open_clip
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from panel2patch.model import repoint_open_clip_folder

    torch.manual_seed(7)
    tiny = build_model("tiny").eval()
    with torch.no_grad():
        tiny.logit_bias.fill_(-3.5)  # a trained value, not the init: must come from the weights
    texts = [SENTENCE, "kidney section", "an arrowhead marks the duct"]
    pil = [Image.new("RGB", (300, 200), (200, 30, 30)), Image.new("RGB", (90, 160), (20, 90, 200))]
    ours_pre = tiny.image_transform()
    x = torch.stack([ours_pre(im) for im in pil])
    want_img, want_txt = tiny.encode_image(x).detach(), tiny.encode_text(tiny.tokenizer()(texts)).detach()
    folder = tiny.save_pretrained(tmp_path / "final")

    monkeypatch.chdir(tmp_path.parent)  # a user somewhere else, absolute or relative paths alike
    for name in (f"local-dir:{folder}", f"local-dir:{os.path.relpath(folder)}"):
        model, _, preprocess = open_clip.create_model_and_transforms(name)
        tokenizer = open_clip.get_tokenizer(name)
        model.eval()
        assert type(model).__name__ == "CustomTextCLIP" and model.logit_bias.item() == pytest.approx(-3.5)
        pixels = torch.stack([preprocess(im) for im in pil])
        assert torch.equal(pixels, x)
        ids = tokenizer(texts)
        assert torch.equal(ids, tiny.tokenizer()(texts))
        with torch.no_grad():
            got_img, got_txt = model.encode_image(pixels, normalize=True), model.encode_text(ids, normalize=True)
        assert torch.allclose(got_img, want_img, atol=1e-6, rtol=0) and torch.allclose(got_txt, want_txt, atol=1e-6, rtol=0)

    # transformers alone on text/: the encoder, then the card's pooling + the projection from the weights
    hf = AutoModel.from_pretrained(str(folder / "text"), add_pooling_layer=False).eval()  # no pooler head trained
    hf_tok = AutoTokenizer.from_pretrained(str(folder / "text"))
    enc = hf_tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], tiny.tokenizer()(texts))
    proj = load_file(str(folder / "open_clip_model.safetensors"))["text.proj.weight"]
    with torch.no_grad():
        h = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()  # mean_pooler (tiny's hf_pooler_type)
    got = torch.nn.functional.normalize(((h * m).sum(1) / m.sum(1)) @ proj.T, dim=-1)
    assert torch.allclose(got, want_txt, atol=1e-6, rtol=0)

    # a copy elsewhere with the original gone: repointed, it loads again (our loader needs no repoint)
    moved = shutil.copytree(folder, tmp_path / "moved")
    shutil.rmtree(folder)
    with pytest.raises(OSError):  # transformers: the text/ it names is gone
        open_clip.create_model_and_transforms(f"local-dir:{moved}")
    ours = build_model(None, init=f"path:{moved}").eval()
    repoint_open_clip_folder(moved)
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{moved}")
    with torch.no_grad():
        assert torch.allclose(model.eval().encode_image(x, normalize=True), want_img, atol=1e-6, rtol=0)
        assert torch.equal(ours.encode_text(tiny.tokenizer()(texts)), want_txt)

"""Feature cache: built once, reused while valid, rebuilt when the encoder changes; real X-rays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.data.sites import SplitConfig, assign_splits
from client.features.cache import FEATURES_FILE, EncoderConfig, build_site_features
from client.features.image import ImageEncoder


@pytest.fixture(scope="module")
def samples(synth_cohort):
    return assign_splits(synth_cohort.head(60), SplitConfig(seed=1), site="s")


def test_cache_is_built_reused_and_rebuilt(samples, tmp_path: Path) -> None:
    first = build_site_features(samples, "s", EncoderConfig(), tmp_path, progress=False)
    stamp = (first / FEATURES_FILE).stat().st_mtime_ns
    again = build_site_features(samples, "s", EncoderConfig(), tmp_path, progress=False)
    assert again == first and (again / FEATURES_FILE).stat().st_mtime_ns == stamp
    other = build_site_features(samples, "s", EncoderConfig(text_max_tokens=64), tmp_path,
                                progress=False)
    assert other != first
    changed = samples.copy()
    changed.loc[changed.index[0], "mortality"] = 1 - changed.mortality.iloc[0]
    assert build_site_features(changed, "s", EncoderConfig(), tmp_path, progress=False) != first
    data = np.load(first / FEATURES_FILE)
    assert data["notes"].shape == (60, 384) and data["cxr"].shape == (60, 1024)
    has = data["available"]
    assert np.abs(data["notes"][has[:, 1]]).sum(1).min() > 0
    assert np.abs(data["notes"][~has[:, 1]]).sum() == 0
    assert np.abs(data["cxr"][has[:, 2]]).sum(1).min() > 0


def test_a_re_partition_encodes_nothing_and_gives_the_same_features(samples, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """Per-input embeddings are content-addressed (client/features/store.py): the same stays cut
    into other sites reuse every note and film vector, and the vectors equal a direct encoding."""
    import json

    from client.features import text
    from client.features.image import ImageEncoder
    from client.features.text import TextEncoder

    whole = build_site_features(samples, "s", EncoderConfig(), tmp_path, progress=False)
    before = np.load(whole / FEATURES_FILE)
    calls: list[int] = []
    real = text.TextEncoder.encode
    monkeypatch.setattr(text.TextEncoder, "encode",
                        lambda self, items, batch_size=16, **kw: calls.append(len(items))
                        or real(self, items, batch_size, **kw))
    halves = [samples.iloc[::2], samples.iloc[1::2]]  # another partition of the same stays
    for name, part in zip(("a", "b"), halves, strict=True):
        folder = build_site_features(part, name, EncoderConfig(), tmp_path, progress=False)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert (manifest["notes_encoded"], manifest["images_encoded"]) == (0, 0)
        data = np.load(folder / FEATURES_FILE)
        rows = np.searchsorted(before["stay_id"], data["stay_id"], sorter=np.argsort(
            before["stay_id"]))
        order = np.argsort(before["stay_id"])[rows]
        assert np.array_equal(data["notes"], before["notes"][order])
        assert np.array_equal(data["cxr"], before["cxr"][order])
    assert calls == []  # the text encoder never ran
    has = before["available"]
    first_note = samples.loc[has[:, 1], "note_text"].iloc[0]
    first_film = samples.loc[has[:, 2], "cxr_path"].iloc[0]
    assert np.allclose(before["notes"][has[:, 1]][0], TextEncoder().encode([first_note])[0],
                       atol=1e-5)
    assert np.allclose(before["cxr"][has[:, 2]][0], ImageEncoder().encode([first_film])[0],
                       atol=1e-5)


def test_a_missing_encoder_is_one_clear_error(samples, tmp_path: Path) -> None:
    """The cache key comes from the encoders' files without loading them; a missing file is
    still one line naming it."""
    from client.errors import MoeHealthInputError

    with pytest.raises(MoeHealthInputError, match="nothing.pt: cannot load DenseNet-121 weights"):
        build_site_features(samples, "s", EncoderConfig(image_weights=str(tmp_path / "nothing.pt")),
                            tmp_path, progress=False)
    with pytest.raises(MoeHealthInputError, match="not a transformers model directory"):
        build_site_features(samples, "s", EncoderConfig(text_model_path=str(tmp_path)), tmp_path,
                            progress=False)


def test_image_encoder_on_real_chest_xrays(caplog, cxr_smoke: Path, monkeypatch) -> None:
    import client.features.image as image

    paths = sorted(str(p) for p in cxr_smoke.glob("*.png"))
    assert len(paths) == 2
    monkeypatch.setattr(image, "_warned_random_init", False)  # once per process: as if new
    with caplog.at_level("WARNING"):
        encoder = ImageEncoder()
        assert encoder.encode([]).shape == (0, 1024)
        assert "NO IMAGE WEIGHTS" not in caplog.text  # no films, nothing to warn about
        feats = encoder.encode(paths)
    assert "NO IMAGE WEIGHTS" in caplog.text and "data.image-encoder" in caplog.text
    assert feats.shape == (2, 1024) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])


def test_image_encoder_loads_local_weights(tmp_path: Path) -> None:
    import torch
    from torchvision.models import densenet121

    torch.manual_seed(5)
    path = tmp_path / "densenet.pt"
    torch.save(densenet121(weights=None).state_dict(), path)
    loaded = ImageEncoder(path)
    assert "random-init" not in loaded.identity
    assert not torch.equal(loaded.features.conv0.weight, ImageEncoder().features.conv0.weight)


def test_draft_decoding_keeps_the_features_of_small_films_and_of_mimic_size_ones(
        cxr_smoke: Path, synth_cohort, tmp_path: Path) -> None:
    """Draft decoding changes nothing for a film under four times the network's input (every
    synthetic film: bit-identical features) and, on a real chest X-ray written as a MIMIC-size
    JPEG, gives features with cosine >= 0.999 to a full decode; the cache identity says which."""
    from PIL import Image

    from client.features.image import image_encoder_identity

    full, draft = (ImageEncoder(image_size=128, draft=d, loader_workers=0) for d in (False, True))
    assert full.identity != draft.identity
    assert draft.identity == image_encoder_identity(None, 128)
    small = [str(p) for p in synth_cohort.cxr_path.dropna().head(4)]
    assert Image.open(small[0]).size == (256, 256)
    assert np.array_equal(full.encode(small), draft.encode(small))
    real = Image.open(sorted(cxr_smoke.glob("*.png"))[0]).convert("L")
    big = tmp_path / "mimic-size.jpg"
    real.resize((2544, 3056), Image.Resampling.BICUBIC).save(big, quality=95)
    a, b = full.encode([str(big)])[0], draft.encode([str(big)])[0]
    assert not np.array_equal(a, b)  # the decoder did scale it
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999


def test_loader_workers_give_the_same_features_and_name_a_bad_film(synth_cohort,
                                                                   tmp_path: Path) -> None:
    films = [str(p) for p in synth_cohort.cxr_path.dropna().head(16)]
    alone = ImageEncoder(image_size=64, loader_workers=0)
    beside = ImageEncoder(image_size=64, loader_workers=1)
    assert np.array_equal(alone.encode(films, batch_size=2), beside.encode(films, batch_size=2))
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(Path(films[0]).read_bytes()[:100])
    with pytest.raises(Exception, match=r"^\S*truncated\.jpg: cannot read image \([^\n]*\)$"):
        beside.encode(films[:9] + [str(bad)] + films[9:], batch_size=2)


def test_notes_batched_by_length_keep_their_order_and_embeddings(samples) -> None:
    """The text encoder batches notes by token count: each row is still its own note's
    embedding, equal to encoding it alone (up to float summation order)."""
    from client.features.text import TextEncoder

    notes = [str(t) for t in samples.loc[samples.has_notes, "note_text"].head(12)]
    notes[3] = notes[3] + " " + notes[4] * 3  # one long note among short ones
    encoder = TextEncoder()
    together = encoder.encode(notes, batch_size=4)
    alone = np.concatenate([encoder.encode([note]) for note in notes])
    assert np.allclose(together, alone, atol=1e-5)
    assert encoder.encode([]).shape == (0, encoder.dim)

"""The offline classifier: real ONNX model, real head file, real shared photos."""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from ecosort_waste import images, pipeline
from ecosort_waste.classifier import head as head_module
from ecosort_waste.classifier import onnx_options
from ecosort_waste.classifier.categories import CATEGORY_CODES, TRASHNET_TO_CATEGORY
from ecosort_waste.classifier.decision import decide
from ecosort_waste.classifier.head import (
    HeadError,
    current_head_path,
    load_head,
    publish_head,
    save_head,
    seed_heads,
)
from ecosort_waste.classifier.imagenet_map import IMAGENET_TO_CATEGORY
from ecosort_waste.classifier.local import MODELS_DIR, ONNX_FILES, LocalClassifier, OnnxBackbone
from ecosort_waste.classifier.preprocess import to_rgb
from ecosort_waste.classifier.registry import registry_from_settings
from ecosort_waste.classifier.training import (
    NEVER,
    HeadNotBetter,
    OutOfFold,
    first_stage_accept,
    load_split,
    photos_dir,
    train_head,
)
from ecosort_waste.config import Settings

PHOTOS = photos_dir()


@pytest.fixture(scope="module")
def shared_photos() -> Path:
    """The shared photos (../shared, which CI has): missing, the tests that need them fail
    rather than skip, which would pass CI with the model's accuracy checks unrun."""
    if not PHOTOS.is_dir():
        pytest.fail(f"shared photos not at {PHOTOS}")
    return PHOTOS


needs_photos = pytest.mark.usefixtures("shared_photos")


@pytest.fixture(scope="module")
def classifier() -> LocalClassifier:
    return LocalClassifier()


def heldout_photos(per_class: int = 5) -> list[tuple[Path, str]]:
    """The first photos of each class in the validation split: never trained or tuned on."""
    validation = load_split(limit_per_class=per_class)["validation"]
    return [(PHOTOS / f, TRASHNET_TO_CATEGORY[f.split("/")[0]]) for f in validation]


@needs_photos
def test_heldout_photos_are_mostly_right(classifier: LocalClassifier) -> None:
    """Measured with the shipped head-v2 (MODEL_CARD.md): 55/60 right, 53 sure, 50 of them right.
    The bounds leave one to three photos of margin; round 1's model fails them (53 right,
    37 sure)."""
    photos = heldout_photos(per_class=10)
    assert len(photos) == 60
    right = sure_right = sure = 0
    for path, expected in photos:
        with Image.open(path) as image:
            result = classifier.classify(image)
        right += result.candidates[0].category == expected
        if not result.not_sure:
            sure += 1
            sure_right += result.category == expected
    assert right / len(photos) >= 0.9
    assert sure >= 48, "at most one held-out photo in five may be 'not sure'"
    assert sure_right / sure >= 0.92


@needs_photos
@pytest.mark.parametrize(
    ("cascade", "record"), [(False, "validation"), (True, "validation_cascade")]
)
def test_this_cpu_reproduces_the_heads_validation_figures(cascade: bool, record: str) -> None:
    """The production path over the whole validation split gives, to the photo, the figures the
    trainer recorded in the head. They were computed on another machine's CPU: any CPU-dependent
    arithmetic (onnxruntime's saturating int8 kernels on x86 without VNNI, say) shows here."""
    classifier = LocalClassifier(cascade=cascade)
    recorded = classifier.head.metrics[record]
    files = load_split()["validation"]
    class_right = category_right = not_sure = all_networks = 0
    for relpath in files:
        with Image.open(PHOTOS / relpath) as image:
            result = classifier.classify(image)
        head_probabilities = result.details["head_probabilities"]
        trashnet_class = relpath.split("/")[0]
        class_right += max(head_probabilities, key=head_probabilities.__getitem__) == trashnet_class
        category_right += result.candidates[0].category == TRASHNET_TO_CATEGORY[trashnet_class]
        not_sure += result.not_sure
        all_networks += result.model_version.count("+") == len(ONNX_FILES) - 1
    measured = {
        "images": len(files),
        "class_accuracy": round(class_right / len(files), 4),
        "category_accuracy": round(category_right / len(files), 4),
        "not_sure_fraction": round(not_sure / len(files), 4),
    }
    if cascade:
        measured["all_networks_fraction"] = round(all_networks / len(files), 4)
    assert measured == {key: recorded[key] for key in measured}


def test_photos_stored_by_the_api_keep_the_validation_figures() -> None:
    """What the service classifies is not the photo file but the API's sanitised JPEG (quality
    85, no metadata), decoded the worker's way. Re-encoding moves a few borderline answers; it
    must not cost top-1 or make the answers markedly less sure."""
    classifier = LocalClassifier()
    recorded = classifier.head.metrics["validation"]
    files = load_split()["validation"]
    class_right = not_sure = 0
    for relpath in files:
        stored = images.sanitise((PHOTOS / relpath).read_bytes()).data
        result = classifier.classify(pipeline.decode_stored(stored))
        head_probabilities = result.details["head_probabilities"]
        class_right += (
            max(head_probabilities, key=head_probabilities.__getitem__) == (relpath.split("/")[0])
        )
        not_sure += result.not_sure
    # Measured on the ninth session's machine: 334 right (as recorded), 10.2% not sure (10.5%).
    assert class_right >= round(recorded["class_accuracy"] * len(files)) - 1
    assert abs(not_sure / len(files) - recorded["not_sure_fraction"]) <= 0.02


@pytest.mark.parametrize(
    ("machine", "flags", "saturate"),
    [
        ("x86_64", "fpu sse2 avx2 fma", True),
        ("x86_64", "avx2 avx512f avx512bw", True),
        ("x86_64", "avx2 avx512f avx512bw avx512_vnni", False),
        ("x86_64", "avx2 avx_vnni", False),
        ("aarch64", "fp asimd asimddp", False),
    ],
)
def test_exact_int8_kernels_only_where_the_fast_ones_saturate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: str, flags: str, saturate: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    monkeypatch.setattr(onnx_options.platform, "machine", lambda: machine)
    assert onnx_options.int8_sums_saturate(cpuinfo) is saturate


@pytest.mark.parametrize("saturate", [True, False])
def test_sessions_ask_for_exact_kernels_exactly_where_sums_saturate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saturate: bool
) -> None:
    monkeypatch.setattr(onnx_options, "int8_sums_saturate", lambda: saturate)
    options = onnx_options.session_options()
    try:
        exact = options.get_session_config_entry("session.x64quantprecision") == "1"
    except RuntimeError:  # onnxruntime's answer for an entry never set
        exact = False
    assert exact is saturate


@needs_photos
def test_where_the_fast_int8_kernels_are_kept_they_are_exact() -> None:
    """Where `int8_sums_saturate` says no, the networks must give the exact kernels' numbers
    bit for bit, or the head's validated answers would not hold on this CPU."""
    if onnx_options.int8_sums_saturate():
        pytest.skip("this CPU runs the exact kernels; the validation figures test covers it")
    exact = ort.SessionOptions()
    exact.add_session_config_entry("session.x64quantprecision", "1")
    files = load_split(limit_per_class=4)["validation"]
    for name in ONNX_FILES:
        fast = OnnxBackbone(MODELS_DIR / name)
        reference = ort.InferenceSession(
            str(MODELS_DIR / name), exact, providers=["CPUExecutionProvider"]
        )
        for relpath in files:
            with Image.open(PHOTOS / relpath) as image:
                batch = fast.views(to_rgb(image), tta=False)
            features, logits = fast.run(batch)
            assert np.array_equal(features, reference.run(["features"], {"image": batch})[0])
            assert np.array_equal(logits, reference.run(["imagenet_logits"], {"image": batch})[0])


@needs_photos
def test_same_photo_same_answer(classifier: LocalClassifier) -> None:
    path, _ = heldout_photos(1)[0]
    with Image.open(path) as image:
        first = classifier.classify(image)
        second = classifier.classify(image.copy())
    assert first == second


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (640, 480), "white"),
        Image.new("RGB", (300, 300), (90, 90, 90)),
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)),
    ],
    ids=["white", "grey", "noise"],
)
def test_blank_or_synthetic_image_is_not_sure(
    classifier: LocalClassifier, image: Image.Image
) -> None:
    result = classifier.classify(image)
    assert result.not_sure
    assert result.category is None
    assert result.candidates, "not sure still lists the candidates"
    assert result.mapping_note.startswith("not sure")


@needs_photos
def test_answer_shape_and_versions(classifier: LocalClassifier) -> None:
    path, _ = heldout_photos(1)[-1]
    with Image.open(path) as image:
        result = classifier.classify(image)
    assert result.category is None or result.category in CATEGORY_CODES
    assert 1 <= len(result.candidates) <= 3
    assert all(c.category in CATEGORY_CODES for c in result.candidates)
    confidences = [c.confidence for c in result.candidates]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert result.confidence == confidences[0]
    assert result.model_version == "+".join(
        f"{Path(name).stem}@{file_sha256(name)[:8]}" for name in ONNX_FILES
    )
    assert re.fullmatch(r"head-v\d+", result.head_version or "")
    assert result.mapping_note


def count_views(classifier: LocalClassifier, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Views each network is given, in the order they run."""
    views: list[int] = []
    for network in classifier.backbones.members:

        def counting_run(batch: np.ndarray, run: Any = network.run) -> Any:
            views.append(len(batch))
            return run(batch)

        monkeypatch.setattr(network, "run", counting_run)
    return views


@pytest.mark.parametrize("override", [None, True, False])
def test_views_per_photo_follow_the_head_unless_overridden(
    classifier: LocalClassifier, override: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The not-sure threshold was calibrated on one view or on two; by default the service
    computes what the head was calibrated on, and (no cascade) with every network."""
    views = count_views(classifier, monkeypatch)
    monkeypatch.setattr(classifier, "test_time_augmentation", override)
    classifier.classify(Image.new("RGB", (64, 48), "white"))
    tta = classifier.head.test_time_augmentation if override is None else override
    assert views == [2 if tta else 1] * len(ONNX_FILES)


@needs_photos
def test_cascade_lets_the_first_network_answer_alone_when_it_is_sure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLASSIFIER_CASCADE: Lite0's sure answers stand and Lite2 does not run for them; the
    others, and every photo without the cascade, get both networks."""
    cascade = LocalClassifier(cascade=True)
    whole = LocalClassifier()
    first_only = f"{cascade.backbones.members[0].version}"
    alone = both = 0
    images = [Image.open(path) for path, _ in heldout_photos(per_class=6)]
    for image in [*images, Image.new("RGB", (640, 480), "white")]:  # white: never sure
        fast, full = cascade.classify(image), whole.classify(image)
        assert full.model_version == whole.backbones.version
        if fast.model_version == first_only:
            alone += 1
            assert not fast.not_sure
            assert fast.confidence >= cascade.head.first_stage_accept
        else:
            both += 1
            assert fast == full  # the whole head decided, as without the cascade
    assert alone >= 22 and both >= 5, (alone, both)  # measured: 28 and 9


def test_first_stage_answers_stand_only_where_they_are_the_whole_heads() -> None:
    """Two first-stage answers that differ from the whole head's (one right, one wrong, so the
    cascade's accuracy would equal the whole head's) must still not stand."""
    whole = OutOfFold(
        answer=np.array(["paper", "can", "glass_bottle", "plastic"]),
        confidence=np.array([0.7, 0.8, 0.9, 0.95]),
        sure=np.array([True, True, True, True]),
    )
    first = OutOfFold(
        answer=np.array(["plastic", "general", "glass_bottle", "plastic"]),
        confidence=np.array([0.6, 0.7, 0.9, 0.4]),
        sure=np.array([True, True, True, False]),
    )
    assert first_stage_accept(first, whole) == 0.71
    sure_and_different = replace(
        first,
        answer=np.array(["plastic", "general", "paper", "plastic"]),
        confidence=np.array([0.6, 0.7, 0.995, 0.4]),
    )
    assert first_stage_accept(sure_and_different, whole) == NEVER


def test_service_setting_defaults_to_the_heads_choice() -> None:
    field = Settings.model_fields["classifier_test_time_augmentation"]
    assert field.default is None
    local_default = inspect.signature(LocalClassifier).parameters["test_time_augmentation"]
    assert local_default.default is None


def test_shipped_head_records_how_it_was_calibrated() -> None:
    head = load_head(current_head_path(MODELS_DIR / "heads"))
    assert head.metrics["test_time_augmentation"] == head.test_time_augmentation
    assert head.backbone_sha256 == "+".join(file_sha256(name) for name in ONNX_FILES)
    assert head.first_stage is not None
    assert head.first_stage.backbone_sha256 == file_sha256(ONNX_FILES[0])
    assert head.first_stage.classes == head.classes


def test_model_card_checksums_match_the_files() -> None:
    """MODEL_CARD.md lists `sha256  file` lines for the committed artefacts."""
    card = (MODELS_DIR / "MODEL_CARD.md").read_text()
    listed = dict(
        (name, digest)
        for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", card, re.MULTILINE)
    )
    assert set(ONNX_FILES) <= set(listed)
    assert current_head_path(MODELS_DIR / "heads").relative_to(MODELS_DIR).as_posix() in listed
    for name, digest in listed.items():
        assert hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest() == digest, name


def file_sha256(name: str) -> str:
    return hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest()


def test_imagenet_mapping_is_valid() -> None:
    assert all(0 <= index < 1000 for index in IMAGENET_TO_CATEGORY)
    assert {code for _, code in IMAGENET_TO_CATEGORY.values()} <= set(CATEGORY_CODES)


def test_imagenet_classes_answer_what_trashnet_lacks(classifier: LocalClassifier) -> None:
    """A photo the backbone calls a jersey (T-shirt) is textile, whatever the head says."""
    head = classifier.head
    features = np.zeros((2, head.weights.shape[0]), np.float32)
    logits = np.zeros((2, 1000), np.float32)
    logits[:, 610] = 12.0  # jersey
    decision = decide(head, features, logits)
    assert decision.top[0] == "textile"
    assert decision.top[1] > 0.9
    assert not decision.top_from_head


def test_transparent_png_gets_a_white_background() -> None:
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)


def test_head_for_another_backbone_is_refused(tmp_path: Path) -> None:
    head = load_head(current_head_path(MODELS_DIR / "heads"))
    heads = tmp_path / "heads"
    heads.mkdir()
    save_head(
        head.__class__(**{**head.__dict__, "backbone_sha256": "0" * 64}), heads / "head-v1.npz"
    )
    (heads / "current").write_text("head-v1.npz\n")
    with pytest.raises(HeadError):
        LocalClassifier(heads_dir=heads)


@pytest.mark.parametrize(
    ("pointer", "file_bytes"),
    [
        ("head-v2.npz\n", None),  # names a file that is not there
        ("head-v2.npz\n", b"PK\x03\x04 cut short"),  # a file cut short
        ("not a head\n", None),
        (None, None),  # no pointer at all
    ],
    ids=["missing-file", "truncated-file", "garbage-pointer", "no-pointer"],
)
def test_a_bad_retrain_leaves_the_running_head_answering(
    tmp_path: Path, pointer: str | None, file_bytes: bytes | None
) -> None:
    heads = tmp_path / "heads"
    heads.mkdir()
    shutil.copy(current_head_path(MODELS_DIR / "heads"), heads / "head-v1.npz")
    (heads / "current").write_text("head-v1.npz\n")
    running = LocalClassifier(heads_dir=heads)
    photo = Image.new("RGB", (64, 64), "white")
    before = running.classify(photo)

    if file_bytes is not None:
        (heads / "head-v2.npz").write_bytes(file_bytes)
    if pointer is None:
        (heads / "current").unlink()
    else:
        (heads / "current").write_text(pointer)

    assert running.classify(photo) == before  # head-v1 still answers
    shutil.copy(heads / "head-v1.npz", heads / "head-v3.npz")
    (heads / "current").write_text("head-v3.npz\n")
    assert running.classify(photo).head_version == "head-v3"  # and a good one is taken up


def test_a_published_version_is_never_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trainers publishing at once both find head-v2 next: the second takes head-v3."""
    heads = tmp_path / "heads"
    heads.mkdir()
    (heads / "head-v2.npz").write_bytes(b"the other trainer's head")
    names = iter(["head-v2.npz", "head-v3.npz"])
    monkeypatch.setattr(head_module, "next_version_path", lambda folder: folder / next(names))

    path = publish_head(load_head(current_head_path(MODELS_DIR / "heads")), heads)

    assert path == heads / "head-v3.npz"
    assert (heads / "head-v2.npz").read_bytes() == b"the other trainer's head"
    assert (heads / "current").read_text().strip() == "head-v3.npz"
    assert load_head(path).version == "head-v3"
    assert sorted(p.name for p in heads.iterdir()) == ["current", "head-v2.npz", "head-v3.npz"]


def test_trainers_publishing_together_leave_current_on_the_highest_version(
    tmp_path: Path,
) -> None:
    heads = tmp_path / "heads"
    heads.mkdir()
    shipped = current_head_path(MODELS_DIR / "heads")
    # Another trainer is publishing: it holds the folder's lock and has chosen head-v1.
    folder = os.open(heads, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX)
    with ThreadPoolExecutor(1) as pool:
        publishing = pool.submit(publish_head, load_head(shipped), heads)
        time.sleep(0.3)
        assert not publishing.done()  # it waits for its turn
        shutil.copy(shipped, heads / "head-v1.npz")
        (heads / "current").write_text("head-v1.npz\n")
        os.close(folder)

        assert publishing.result(timeout=30) == heads / "head-v2.npz"
    assert (heads / "current").read_text().strip() == "head-v2.npz"


def test_a_heads_folder_of_its_own_starts_with_the_shipped_head(tmp_path: Path) -> None:
    heads = tmp_path / "stack" / "heads"
    shipped = current_head_path(MODELS_DIR / "heads")

    seed_heads(heads, MODELS_DIR / "heads")

    assert current_head_path(heads) == heads / shipped.name
    assert (heads / shipped.name).read_bytes() == shipped.read_bytes()
    # Once it has a current head, seeding leaves it alone (a retrained one stays current).
    (heads / "current").write_text("head-v99.npz\n")
    seed_heads(heads, MODELS_DIR / "heads")
    assert (heads / "current").read_text() == "head-v99.npz\n"


def test_the_service_seeds_its_configured_heads_folder(tmp_path: Path) -> None:
    heads = tmp_path / "heads"
    settings = Settings(classifier_provider="local", classifier_heads_dir=str(heads))
    pixels = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)

    answer = registry_from_settings(settings).classify(Image.fromarray(pixels))

    assert answer.classification.head_version == current_head_path(MODELS_DIR / "heads").stem
    assert (heads / "current").exists()


@needs_photos
def test_train_head_writes_a_new_version_the_service_picks_up(tmp_path: Path) -> None:
    heads = tmp_path / "heads"
    shipped = current_head_path(MODELS_DIR / "heads")
    heads.mkdir()
    shutil.copy(shipped, heads / "head-v1.npz")
    (heads / "current").write_text("head-v1.npz\n")
    running = LocalClassifier(heads_dir=heads)
    assert running.classify(Image.new("RGB", (64, 64), "white")).head_version == "head-v1"

    glass = sorted((PHOTOS / "glass").glob("*.jpg"))[:2]
    messages: list[str] = []
    path = train_head(
        [(p, "glass_bottle") for p in glass] + [(glass[0], "not-a-code")],
        heads_dir=heads,
        limit_per_class=2,
        allow_worse=True,  # two photos per class do not make a better head
        log=messages.append,
    )
    assert path == heads / "head-v2.npz"
    assert (heads / "current").read_text().strip() == "head-v2.npz"
    new_head = load_head(path)
    assert new_head.metrics["corrections"] == 2
    assert new_head.metrics["validation"]["images"] == 12
    assert any("validation" in m for m in messages)
    assert any("not-a-code" in m for m in messages)
    # The running classifier switches to the new head without a restart.
    assert running.classify(Image.new("RGB", (64, 64), "white")).head_version == "head-v2"


@needs_photos
def test_train_head_does_not_publish_a_head_worse_than_the_current_one(tmp_path: Path) -> None:
    """A retrain that does worse on the validation photos than the head the service runs (bad
    or poisoned corrections) is not switched to; asked for explicitly, it is."""
    heads = tmp_path / "heads"
    seed_heads(heads, MODELS_DIR / "heads")
    before = (heads / "current").read_text()
    # Cans called paper: the head learns that metal is paper.
    metal = sorted((PHOTOS / "metal").glob("*.jpg"))[10:16]
    poisoned = [(p, "paper") for p in metal]
    messages: list[str] = []

    with pytest.raises(HeadNotBetter, match="validation"):
        train_head(poisoned, heads_dir=heads, limit_per_class=2, log=messages.append)

    assert (heads / "current").read_text() == before
    assert sorted(p.name for p in heads.glob("head-v*.npz")) == [before.strip()]
    path = train_head(poisoned, heads_dir=heads, limit_per_class=2, allow_worse=True)
    assert (heads / "current").read_text().strip() == path.name != before.strip()

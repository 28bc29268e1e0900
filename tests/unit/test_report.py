"""The study report on a synthetic results tree: what `vaeops.report.write_report` writes from the
files the pipeline leaves (train.json, history.csv, eval.json, grids, sample-quality scores, the
claim sweeps, the headline and promotion metrics)."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vaeops.config import load_params

ACTIVATIONS = ("prelu", "relu", "silu", "tanh", "sigmoid")
SEEDS = (0, 1, 2)
# Mean validation IWAE NLL per activation: prelu best, as in the real study.
NLL = {"prelu": 120.0, "relu": 122.0, "silu": 124.0, "tanh": 126.0, "sigmoid": 150.0}
# First-layer gradient norm (the last layer's is 10): sigmoid's gradients vanish.
FIRST_LAYER_GRADIENT = {"prelu": 9.0, "relu": 8.0, "silu": 6.0, "tanh": 2.0, "sigmoid": 0.2}
LAYERS = ("encoder.1.0", "decoder.0.0", "head")
EPOCHS = 3
CLAIMS = {
    "seeds": list(SEEDS),
    "beta_activations": ["relu", "silu"],
    "betas": [0.5, 2.0],
    "dropouts": [0.2],
    "latents": [2, 8],
}
REPORT_CSVS = (
    "rate_distortion.csv",
    "grad_norms.csv",
    "dead_units.csv",
    "sweep_dropout.csv",
    "sweep_latent.csv",
    "epochs_to_target.csv",
    "sample_quality.csv",
)


def jitter(activation: str, seed: int) -> float:
    """A seed's wobble, a different size per activation so paired differences have a spread."""
    return (0.0, 0.13, -0.11)[seed] * (1 + ACTIVATIONS.index(activation) / 2)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def write_png(path: Path, shade: int) -> None:
    """A small grey PNG (a stand-in for an image grid)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (12, 8), color=shade).save(path)


def write_history(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def vae_history(nll: float, first_layer: float, seed: int, gap: float) -> list[dict]:
    """Falling validation negative ELBO, train below it by `gap`, per-layer gradient norms."""
    rows = []
    for epoch in range(1, EPOCHS + 1):
        val = nll + 5 + 60 / epoch
        rows.append(
            {"epoch": epoch, "train/neg_elbo": val - gap, "val/neg_elbo": val}
            | {"train/grad_norm/encoder.1.0": first_layer * (1 + 0.05 * epoch) + 0.1 * seed}
            | {"train/grad_norm/decoder.0.0": 5.0, "train/grad_norm/head": 10.0}
        )
    return rows


def write_variant(
    root: Path, name: str, figures: dict, history: list[dict], settings: dict
) -> None:
    """One variant's train.json, history.csv, eval.json and grids under `root`."""
    trained = {"variant": name, "diverged": False, "epochs": EPOCHS, "parameters": 1000}
    write_json(root / "variants" / name / "train.json", trained | settings)
    write_history(root / "variants" / name / "history.csv", history)
    write_json(
        root / "evaluation" / name / "eval.json", {"variant": name, "diverged": False} | figures
    )
    for shade, grid in enumerate(("reconstructions", "samples")):
        write_png(root / "evaluation" / name / "images" / f"{grid}.png", 40 + 80 * shade)


def vae_figures(activation: str, seed: int, beta: float = 1.0, latent: int = 4) -> dict:
    """The evaluate step's figures of a VAE: distortion grows and rate falls with beta."""
    nll = NLL[activation] + jitter(activation, seed) + abs(latent - 4)
    rate = 20.0 / beta - (2.0 if activation == "silu" else 0.0) + jitter(activation, seed)
    return {
        "val/iwae_nll": nll,
        "test/iwae_nll": nll + 1,
        "val/neg_elbo": nll + 5,
        "test/neg_elbo": nll + 6,
        "val/reconstruction": 80.0 + 10 * beta + jitter(activation, seed),
        "val/kl": rate,
        "val/active_units": min(latent, 3),
        "val/dead_unit_fraction": 0.2 if activation == "relu" else 0.0,
    }


def write_main_sweep(outputs: Path) -> None:
    for activation in ACTIVATIONS:
        for seed in SEEDS:
            figures = vae_figures(activation, seed)
            history = vae_history(
                figures["val/iwae_nll"], FIRST_LAYER_GRADIENT[activation], seed, gap=6.0
            )
            settings = {"kind": "vae", "activation": activation, "seed": seed}
            write_variant(outputs, f"vae-{activation}-s{seed}", figures, history, settings)
    for seed in SEEDS:
        figures = {"val/reconstruction": 90.0 + seed, "val/dead_unit_fraction": 0.18}
        figures |= {"val/iwae_nll": None, "val/neg_elbo": None, "val/kl": None}
        history = [{"epoch": e, "train/loss": 100.0 / e, "val/loss": 101.0 / e} for e in (1, 2, 3)]
        settings = {"kind": "ae", "activation": "relu", "seed": seed}
        write_variant(outputs, f"ae-relu-s{seed}", figures, history, settings)


def write_claim_sweeps(folder: Path) -> None:
    """Beta sweeps of relu and silu; dropout and latent sweeps of prelu (the best config)."""
    points = [("beta", a, b) for a in CLAIMS["beta_activations"] for b in CLAIMS["betas"]]
    points += [("dropout", "prelu", d) for d in CLAIMS["dropouts"]]
    points += [("latent", "prelu", z) for z in CLAIMS["latents"]]
    for sweep, activation, value in points:
        for seed in SEEDS:
            figures = vae_figures(
                activation,
                seed,
                beta=value if sweep == "beta" else 1.0,
                latent=value if sweep == "latent" else 4,
            )
            gap = 6.0 - 15 * value + jitter(activation, seed) if sweep == "dropout" else 6.0
            history = vae_history(figures["val/iwae_nll"], 5.0, seed, gap)
            settings = {"kind": "vae", "activation": activation, "seed": seed}
            settings |= {"sweep": sweep, "value": value}
            name = f"vae-{activation}-s{seed}-{sweep}{value:g}"
            write_variant(folder, name, figures, history, settings)


def write_study_metrics(root: Path) -> None:
    means = {f"vae-{a}": nll for a, nll in NLL.items()}
    best = {"config": "vae-prelu", "mean": 120.0, "std": 0.1}
    headline = {"best": best, "metric": "val/iwae_nll", "per_config": means}
    write_json(root / "metrics" / "study.json", headline)
    candidate = {"variant": "vae-prelu-s0", "version": 3, "value": 119.9}
    write_json(
        root / "metrics" / "promotion.json",
        {
            "decision": "promoted",
            "reason": "no champion yet",
            "metric": "val/iwae_nll",
            "candidate": candidate | {"config_mean": 120.0, "config_std": 0.1},
            "champion": {"version": 3, "value": 119.9},
        },
    )
    write_json(root / "metrics" / "classifier.json", {"test_accuracy": 0.97})


def write_sample_quality(folder: Path) -> None:
    """Frechet distances: every VAE far better than the AE."""
    names = [(f"vae-{a}", a) for a in ACTIVATIONS] + [("ae-relu", "relu")]
    for config, activation in names:
        for seed in SEEDS:
            if config.startswith("ae"):
                distance = 60.0 + 2 * jitter(activation, seed)
            else:
                distance = 10.0 + NLL[activation] / 50 + jitter(activation, seed)
            write_json(
                folder / f"{config}-s{seed}.json",
                {
                    "frechet_distance": distance,
                    "mean_confidence": 0.9,
                    "classes_covered": 10,
                    "class_entropy": 2.2,
                    "class_counts": [100] * 10,
                },
            )


def write_study_tree(folder: Path, params_writer) -> Path:
    """A params file and every file the report reads, under `folder`; the params path."""
    params_path = params_writer(
        folder,
        sweep={"activations": list(ACTIVATIONS), "seeds": list(SEEDS)},
        claims=CLAIMS,
    )
    outputs = folder / "outputs"
    write_main_sweep(outputs)
    write_claim_sweeps(outputs / "claim_sweeps")
    write_sample_quality(outputs / "sample_quality")
    write_study_metrics(folder)
    for shade, name in enumerate(("samples", "reconstructions", "interpolations")):
        write_png(outputs / "generated" / f"{name}.png", 100 + 50 * shade)
    return params_path


@pytest.fixture(scope="module")
def study_params(tmp_path_factory, params_writer):
    """The synthetic study's params (its tree written once for this module's tests)."""
    return load_params(write_study_tree(tmp_path_factory.mktemp("study"), params_writer))


@pytest.fixture(scope="module")
def written(study_params):
    """What `write_report` returned for the synthetic study (the report written once)."""
    from vaeops.report import write_report

    return write_report(study_params)


class PageParts(HTMLParser):
    """The image sources, leaderboard rows and claims (with their verdicts) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.table_ids: list[str] = []
        self.leaderboard_rows = 0
        self.claims: list[str] = []
        self._verdict = False
        self._in_leaderboard_body = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        if tag == "table":
            self.table_ids.append(attributes.get("id", ""))
        if tag == "tbody" and self.table_ids[-1:] == ["leaderboard"]:
            self._in_leaderboard_body = True
        if tag == "tr" and self._in_leaderboard_body:
            self.leaderboard_rows += 1
        if tag == "article" and "claim" in attributes.get("class", ""):
            self.claims.append(attributes["data-verdict"])
        self._verdict = tag == "strong" and attributes.get("class") == "verdict"

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_leaderboard_body = False

    def handle_data(self, data):
        if self._verdict:
            assert data == self.claims[-1]
            self._verdict = False


def parse_page(path: Path) -> PageParts:
    parts = PageParts()
    parts.feed(path.read_text())
    return parts


def test_the_page_is_self_contained(written):
    page = Path(written["html"]).read_text()
    assert "http" not in page
    assert 'src="data:image/png;base64,' in page
    parts = parse_page(Path(written["html"]))
    assert parts.images and all(src.startswith("data:image/png;base64,") for src in parts.images)
    # 6 figures, 3 champion images, 2 grids for each of 6 configs.
    assert len(parts.images) == 7 + 3 + 12


def test_the_leaderboard_has_one_row_per_config_best_first(written, study_params):
    assert parse_page(Path(written["html"])).leaderboard_rows == len(ACTIVATIONS) + 1
    with (study_params.paths.reports / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["config"] for row in rows] == [
        "vae-prelu",
        "vae-relu",
        "vae-silu",
        "vae-tanh",
        "vae-sigmoid",
        "ae-relu",
    ]
    prelu, ae = rows[0], rows[-1]
    assert float(prelu["val/iwae_nll mean"]) == pytest.approx(120.0 + (0.13 - 0.11) / 3)
    assert prelu["vs_best"] == "best"
    assert rows[-2]["vs_best"] == "resolved"  # sigmoid, 30 nats worse
    assert ae["val/iwae_nll mean"] == "" and ae["vs_best"] == "n/a"
    # relu's jitter is 1.5 times the base wobble, doubled for the AE's distances.
    assert float(ae["frechet_distance mean"]) == pytest.approx(60.0 + 3 * (0.13 - 0.11) / 3)


def test_every_claim_is_listed_with_its_verdict(written, study_params):
    parts = parse_page(Path(written["html"]))
    verdicts = json.loads((study_params.paths.metrics / "claims.json").read_text())
    assert len(parts.claims) == len(verdicts) == 7
    assert parts.claims == list(written["claims"].values())
    # Built in: silu's rate is 2 nats lower at equal distortion, the AE samples far worse,
    # sigmoid's first-layer gradients vanish, dropout narrows the gap, latent 4 is best.
    assert verdicts["swish_compresses_better"]["verdict"] == "supported"
    assert verdicts["ae_cannot_generate"]["verdict"] == "supported"
    assert verdicts["dropout_reduces_overfitting"]["verdict"] == "supported"
    assert verdicts["latent_size_by_validation"]["numbers"]["optimum"] == 4
    assert verdicts["swish_compresses_better"]["numbers"]["silu_minus_relu_rate"]["mean"] < -1


def test_the_plot_data_has_every_point(written, study_params):
    plots = study_params.paths.plots
    assert sorted(path.name for path in plots.iterdir()) == sorted(REPORT_CSVS)
    with (plots / "rate_distortion.csv").open() as handle:
        points = list(csv.DictReader(handle))
    # Each activation's beta sweep with the main sweep's beta (1.0) between its points.
    assert [(p["config"], float(p["beta"])) for p in points] == [
        (f"vae-{a}", beta) for a in ("relu", "silu") for beta in (0.5, 1.0, 2.0)
    ]
    relu_half = points[0]
    assert float(relu_half["val/reconstruction"]) == pytest.approx(85.0 + (0.13 - 0.11) * 1.5 / 3)
    with (plots / "sweep_latent.csv").open() as handle:
        latents = [
            (int(float(row["latent"])), row["val/active_units"]) for row in csv.DictReader(handle)
        ]
    assert latents == [(2, "2.0"), (4, "3.0"), (8, "3.0")]


def test_the_markdown_links_images_that_exist(written, study_params):
    markdown = Path(written["markdown"]).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 7 + 3 + 12
    assert all((study_params.paths.reports / link).is_file() for link in links)
    assert "## Claims" in markdown and "train_seconds" in markdown


def test_a_rerun_writes_the_same_bytes(written, study_params):
    from vaeops.report import write_report

    def snapshot() -> dict[str, bytes]:
        folders = (study_params.paths.reports, study_params.paths.plots)
        files = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
        files.append(study_params.paths.metrics / "claims.json")
        return {str(path): path.read_bytes() for path in files}

    before = snapshot()
    write_report(study_params)
    assert snapshot() == before


def test_missing_headline_is_a_user_error(tmp_path, params_writer):
    from vaeops.errors import USER_ERRORS
    from vaeops.report import write_report

    params = load_params(write_study_tree(tmp_path, params_writer))
    (params.paths.metrics / "study.json").unlink()
    with pytest.raises(USER_ERRORS, match=r"study\.json: missing; run the step"):
        write_report(params)
    assert not params.paths.reports.exists()


def test_prefect_artifacts_are_skipped_outside_a_flow_run(written, study_params):
    from vaeops.report import publish_prefect_artifacts

    assert publish_prefect_artifacts(study_params) is False

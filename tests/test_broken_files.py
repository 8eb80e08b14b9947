"""Every broken file is a one-line error naming it, never a traceback: for each file type the
project reads (.npy, .npz, Parquet, CSV inputs; profiles; plans and their hot-ids files), a
property test cuts a valid file at drawn points (0 bytes and inside the header included) and
flips drawn bytes, and the readers either read it (a CSV cut at a line end is a shorter valid
CSV) or raise `ValueError` naming the file; the CLI turns each into exit status 2 and one line.
Wrong dtypes and shapes: named errors too. Checkpoints (DCP files cut anywhere, LATEST garbled):
CheckpointError naming the file or step directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import hot_plan, tables_of, zipf_profile
from torchrec_hot import HotPlan, load_profile, save_profile
from torchrec_hot.cli.main import main
from torchrec_hot.data import open_source

PROPS = settings(max_examples=25, deadline=None, derandomize=True)
IDS = np.random.default_rng(0).integers(0, 1000, (300, 3))


def _inputs(d: Path) -> dict[str, Path]:
    """A valid file of every input format, in `d`."""
    files = {s: d / f"good.{s}" for s in ("npy", "npz", "parquet", "csv")}
    np.save(files["npy"], IDS)
    np.savez_compressed(files["npz"], a=IDS[:, 0], b=IDS[:, 1:],
                        c=IDS[:, 2], c__lengths=np.ones(len(IDS), np.int64))  # fmt: skip
    table = pa.table({"a": IDS[:, 0], "b": IDS[:, 1]})
    pq.write_table(table, files["parquet"])
    pacsv.write_csv(table, files["csv"])
    return files


def _read_input(path: Path) -> None:
    for _ in open_source([path]).chunks(64):
        pass


def _plan_files(d: Path) -> tuple[Path, Path, Path]:
    tables = tables_of([500, 800], 8)
    profile = zipf_profile(tables, 0)
    save_profile(profile, d / "profile.npz")
    plan, _ = hot_plan(tables, profile)
    plan.to_json(d / "plan.json")
    sidecars = [p for p in d.iterdir() if p.name.startswith("plan.") and p.suffix == ".npz"]
    assert len(sidecars) == 1
    return d / "profile.npz", d / "plan.json", sidecars[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("good")
    found = _inputs(d)
    found["profile"], found["plan"], found["hot_ids"] = _plan_files(d)
    return found


def _damaged(data: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    """`data` cut to a fraction `cut` of its length (1.0: whole), with bytes at the drawn
    relative positions XOR-ed with the drawn values."""
    out = bytearray(data[: int(len(data) * cut)])
    for where, value in flips:
        if out:
            out[min(len(out) - 1, int(where * len(out)))] ^= value
    return bytes(out)


def _check(read, path: Path, named: Path) -> None:
    """`read(path)` succeeds or raises a ValueError naming `named`; nothing else escapes."""
    try:
        read(path)
    except ValueError as e:
        assert named.name in str(e), str(e)
        assert "\n" not in str(e).strip() or "does not match" in str(e), str(e)


DAMAGE = dict(
    cut=st.one_of(st.just(0.0), st.floats(0.0, 0.05), st.floats(0.0, 1.0), st.just(1.0)),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=3),
)


@PROPS
@given(kind=st.sampled_from(["npy", "npz", "parquet", "csv"]), **DAMAGE)
def test_damaged_inputs_are_named_errors(files, tmp_path_factory, kind, cut, flips):
    bad = tmp_path_factory.mktemp("bad") / f"day.{kind}"
    bad.write_bytes(_damaged(files[kind].read_bytes(), cut, flips))
    _check(_read_input, bad, bad)


@PROPS
@given(**DAMAGE)
def test_damaged_profiles_are_named_errors(files, tmp_path_factory, cut, flips):
    bad = tmp_path_factory.mktemp("bad") / "profile.npz"
    bad.write_bytes(_damaged(files["profile"].read_bytes(), cut, flips))
    _check(load_profile, bad, bad)


@PROPS
@given(which=st.sampled_from(["plan", "hot_ids"]), **DAMAGE)
def test_damaged_plans_and_hot_id_files_are_named_errors(files, tmp_path_factory, which, cut,
                                                          flips):  # fmt: skip
    d = tmp_path_factory.mktemp("bad")
    for name in ("plan", "hot_ids"):
        (d / files[name].name).write_bytes(files[name].read_bytes())
    damaged = d / files[which].name
    damaged.write_bytes(_damaged(damaged.read_bytes(), cut, flips))
    _check(HotPlan.from_json, d / "plan.json", damaged)


@pytest.mark.parametrize("array,message", [
    (np.zeros((4, 2), np.float32), "integer"),
    (np.zeros((2, 2, 2), np.int64), "1-D or 2-D"),
    (np.array([["a", "b"]]), "integer"),
])  # fmt: skip
def test_wrong_dtypes_and_shapes_are_named(tmp_path, array, message):
    for suffix in ("npy", "npz"):
        path = tmp_path / f"x.{suffix}"
        np.save(path, array) if suffix == "npy" else np.savez(path, a=array)
        with pytest.raises(ValueError, match=f"x.{suffix}") as err:
            _read_input(path)
        assert suffix == "npz" or message in str(err.value)
    floats = pa.table({"a": [0.5, 1.5]})
    pq.write_table(floats, tmp_path / "x.parquet")
    pacsv.write_csv(floats, tmp_path / "x.csv")
    for suffix in ("parquet", "csv"):
        with pytest.raises(ValueError, match=f"x.{suffix}.*expected integers"):
            _read_input(tmp_path / f"x.{suffix}")


@pytest.mark.parametrize("kind", ["npy", "npz", "parquet", "csv", "profile", "plan"])
def test_the_cli_says_one_line_and_exits_2(files, tmp_path, capsys, kind):
    bad = tmp_path / files[kind].name
    bad.write_bytes(files[kind].read_bytes()[: files[kind].stat().st_size // 2])
    if kind == "plan":
        argv = ["report", str(bad)]
    elif kind == "profile":
        argv = ["plan", "--profile", str(bad), "--world-size", "2", "--hbm-gb", "1",
                "--compute-device", "cpu", "--out", str(tmp_path / "p.json")]
    else:
        argv = ["profile", str(bad), "--rows", "1000", "--out", str(tmp_path / "p.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchrec-hot ") and "Traceback" not in err, err
    assert bad.name in err and err.count("\n") == 1, err


def _checkpoint_worker(rank: int, world: int, root: str, seed: int) -> list[tuple[str, str, str]]:
    """Saves a hot/cold DMP checkpoint, then loads damaged copies of it: each of its files cut
    to 0 bytes, inside its first 64 bytes and at a drawn point, and LATEST garbled. Returns
    (what was damaged, the exception's type, its message) per attempt ("" when it loaded)."""
    import shutil

    import torch
    from torchrec import EmbeddingBagConfig
    from torchrec.distributed import DistributedModelParallel

    from tests.builders import ebc_model
    from torchrec_hot import apply_hot_plan, latest_checkpoint, load_checkpoint, save_checkpoint

    tables = [EmbeddingBagConfig(name=f"t{i}", num_embeddings=200, embedding_dim=8,
                                 feature_names=[f"f{i}"]) for i in range(2)]
    plan, sharding = hot_plan(tables, zipf_profile(tables, seed))
    dmp = DistributedModelParallel(apply_hot_plan(ebc_model(tables, "rowwise_adagrad"), plan),
                                   plan=sharding, device=torch.device("cpu"))
    good = save_checkpoint(dmp, Path(root) / "good", 1)
    rng = np.random.default_rng(seed)
    names = sorted(f.name for f in good.iterdir())
    assert ".checksums_0.json" in names and ".checksums_1.json" in names, names
    damages: list[tuple[str, object]] = [
        (n, cut) for n in names for cut in (0, int(rng.integers(1, 64)), None, "flip")
    ]
    damages += [(".checksums_1.json", "delete")]
    damages += [("LATEST", b"\xff\xfe"), ("LATEST", b""), ("LATEST", b"../elsewhere")]
    if rank == 0:
        for i, (name, cut) in enumerate(damages):
            copy = Path(root) / f"copy{i}"
            shutil.copytree(good.parent, copy)
            target = copy / name if name == "LATEST" else copy / good.name / name
            data = bytearray(target.read_bytes())
            if cut == "delete":
                target.unlink()
            elif cut == "flip":  # one byte anywhere: header, tensor data, a checksum
                data[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
                target.write_bytes(data)
            elif isinstance(cut, bytes):
                target.write_bytes(cut)
            else:
                low = min(64, len(data) - 1)  # a drawn point past the first 64 bytes
                end = int(rng.integers(low, len(data))) if cut is None else min(cut, low)
                target.write_bytes(data[:end])
        legacy = Path(root) / "legacy"  # as saved before checksums: loads, unchecked
        shutil.copytree(good.parent, legacy)
        for record in (legacy / good.name).glob(".checksums_*.json"):
            record.unlink()
    torch.distributed.barrier()
    load_checkpoint(dmp, Path(root) / "legacy")
    results = []
    for i, (name, cut) in enumerate(damages):
        copy = Path(root) / f"copy{i}"
        try:
            path = latest_checkpoint(copy)
            load_checkpoint(dmp, path if path is not None else copy)
            results.append((f"{name} cut to {cut!r}", "", ""))
        except Exception as e:  # what reaches the user; the test inspects it
            results.append((f"{name} cut to {cut!r}", type(e).__name__, str(e)))
    return results


@pytest.mark.multiprocess
def test_damaged_checkpoints_are_checkpoint_errors_naming_the_file(tmp_path):
    """Every file of a checkpoint (.metadata, each rank's .distcp, each rank's checksums) cut
    anywhere or with one byte flipped anywhere (tensor data included: caught by the checksums
    the save recorded), a checksum record deleted, and a garbled LATEST: every load raises
    CheckpointError naming the checkpoint, on both ranks."""
    from tests.dist_utils import run_on_ranks

    seed = int(np.random.default_rng().integers(2**31))
    print("seed", seed)
    for results in run_on_ranks(_checkpoint_worker, 2, str(tmp_path), seed, timeout_s=60):
        assert len(results) >= 24
        print("\n".join(f"{w}: {k}: {m[:150]}" for w, k, m in results))
        for what, kind, message in results:
            assert kind == "CheckpointError", (what, kind, message)
            assert "copy" in message and ("step_" in message or "LATEST" in message), (what,
                                                                                       message)
            name = what.split(" cut to ")[0]
            if name.endswith(".distcp") or name == ".metadata":  # the damaged file is named
                assert f"/{name} " in message, (what, message)
            elif name.startswith(".checksums_"):  # the record, or a file it no longer matches
                assert any(f in message for f in (".checksums_", ".distcp", ".metadata")), (
                    what, message)

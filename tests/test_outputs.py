"""Flow outputs as an attacker or a careless user types them: each stays under its root, never in a region's
data, and never replaces what the flows did not write (issue 26). Real files, real stores, real symlinks."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import xarray as xr

from proximate.analysis import ParameterError
from proximate.outputs import OutputPolicy, check_replaceable, resolve_output, write_json, write_result
from proximate.testing import synthetic


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) and its bytes' digest: the oracle for "unchanged"."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            out[rel] = (
                "link->" + os.readlink(path) if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return out


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A deployment's home: ``results/`` and a region's data beside it, with one input dataset."""
    monkeypatch.delenv("PROXIMATE_RESULTS", raising=False)
    monkeypatch.delenv("PROXIMATE_OUTPUT_ROOTS", raising=False)
    monkeypatch.delenv("PROXIMATE_ROOT", raising=False)
    monkeypatch.setenv("PROXIMATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # where ~ goes: nothing may be written there either
    (tmp_path / "home" / "results").mkdir(parents=True)
    (tmp_path / "user").mkdir()
    ds = synthetic.daily_temperature(days=20, nlat=4, nlon=8)
    synthetic.write_netcdf(ds, tmp_path / "home" / "regions" / "gcp" / "daily" / "tas_2025.nc")
    return tmp_path / "home"


def _policy(home: Path, **env: str) -> OutputPolicy:
    return OutputPolicy.from_env(
        {"PROXIMATE_HOME": str(home), **env}, forbidden={"region gcp": str(home / "regions/gcp")}
    )


def _small() -> xr.Dataset:
    return synthetic.daily_temperature(days=3, nlat=2, nlon=3)


def test_a_relative_output_climbing_into_a_regions_data_is_refused_and_the_input_is_unchanged(home):
    before = _tree(home)
    with pytest.raises(ParameterError, match=r"output: '../regions/gcp/daily/tas_2025.nc' contains '..'") as err:
        resolve_output("../regions/gcp/daily/tas_2025.nc", policy=_policy(home))
    assert err.value.parameter == "output"
    assert _tree(home) == before


def test_a_symlink_in_the_results_root_leading_out_is_refused_at_resolve_and_at_write_time(home):
    (home / "results" / "shortcut").symlink_to(home / "regions" / "gcp" / "daily")
    before = _tree(home)
    with pytest.raises(ParameterError, match=r"output: '.*/results/shortcut/tas_2025.nc' resolves to .*/regions/gcp/"):
        resolve_output("shortcut/tas_2025.nc", policy=_policy(home))
    # A folder that was a folder when the run began and is a link when its result is written
    policy = _policy(home)
    target = resolve_output("later/tas_2025.nc", policy=policy)
    (home / "results" / "later").symlink_to(home / "regions" / "gcp" / "daily")
    before = _tree(home)
    with pytest.raises(ParameterError, match=r"output: '.*/results/later/tas_2025.nc' resolves to .* symbolic link"):
        write_result(_small(), target, policy=policy)
    with pytest.raises(ParameterError, match=r"output: '.*/results/later/x.json' resolves to"):
        write_json({"a": 1}, str(home / "results" / "later" / "x.json"), policy=policy)
    assert _tree(home) == before
    assert sorted(os.listdir(home / "regions" / "gcp" / "daily")) == ["tas_2025.nc"]  # no temporary left there


@pytest.mark.parametrize("output", ["~/x.nc", "/etc/cron.d/x.json", "file:///etc/cron.d/x.json", "s3://bucket/x.nc"])
def test_absolute_home_and_s3_outputs_are_refused_unless_an_operator_allows_their_root(home, output):
    with pytest.raises(ParameterError, match=r"output: .* (is outside the results root|s3:// outputs go only)") as err:
        resolve_output(output, policy=_policy(home), suffixes=(".nc", ".zarr", ".json"))
    assert err.value.parameter == "output"
    assert "none: it is empty" in str(err.value)
    assert not Path("/etc/cron.d/x.json").exists()
    assert list((home.parent / "user").iterdir()) == []


def test_allowed_roots_admit_absolute_and_s3_outputs_but_never_a_regions_data_or_source(home, tmp_path):
    policy = OutputPolicy.from_env(
        {"PROXIMATE_HOME": str(home), "PROXIMATE_OUTPUT_ROOTS": f"{tmp_path}, s3://bucket/out"},
        forbidden={"region gcp": str(home / "regions/gcp"), "the source of region gcp": "s3://bucket/out/gcp/"},
    )
    assert resolve_output(str(tmp_path / "elsewhere" / "x.nc"), policy=policy) == str(tmp_path / "elsewhere/x.nc")
    assert resolve_output("s3://bucket/out/x.nc", policy=policy) == "s3://bucket/out/x.nc"
    for bad, message in [
        ("s3://bucket/output/x.nc", "s3:// outputs go only under"),  # a prefix is a folder, not a string prefix
        ("s3://bucket/out/gcp/x.nc", "is inside the source of region gcp"),
        (str(home / "regions/gcp/daily/tas_2025.nc"), "is inside .*the data root of region gcp"),
        (str(home / "regions/gcp/new.nc"), "is inside .*the data root of region gcp"),
        (str(home / "regions.zarr"), None),  # beside the region: allowed
    ]:
        if message is None:
            resolve_output(bad, policy=policy)
            continue
        with pytest.raises(ParameterError, match=message) as err:
            resolve_output(bad, policy=policy)
        assert bad in str(err.value)
    # A folder output holding a region's data: its per-dataset files would land beside the data
    with pytest.raises(ParameterError, match=r"holds.*region gcp"):
        resolve_output(str(home / "regions"), folder=True, policy=policy)
    # and this process's own region root, from its environment
    own = OutputPolicy.from_env({"PROXIMATE_OUTPUT_ROOTS": str(tmp_path), "PROXIMATE_ROOT": str(tmp_path / "mine")})
    with pytest.raises(ParameterError, match="data root of region"):
        resolve_output(str(tmp_path / "mine" / "x.nc"), policy=own)


def test_a_zarr_output_naming_an_existing_store_is_refused_and_the_store_is_kept(home):
    store = home / "results" / "inputs.zarr"
    _small().to_zarr(store, mode="w")  # somebody's store, not a flow's result
    before = _tree(home)
    with pytest.raises(ParameterError, match=r"output: '.*/inputs.zarr' already exists and was not written by"):
        resolve_output("inputs.zarr", policy=_policy(home))
    with pytest.raises(ParameterError, match="overwrite=True"):
        write_result(_small() + 1, str(store))  # the write checks again, even with no policy
    assert _tree(home) == before
    assert [p for p in os.listdir(home / "results") if p != "inputs.zarr"] == []  # no temporary, no .old left
    # told to: replaced whole
    write_result(_small() + 1, str(store), overwrite=True)
    with xr.open_zarr(store) as ds:
        xr.testing.assert_allclose(ds.tas.load(), (_small() + 1).tas)


def test_a_netcdf_or_json_output_naming_a_file_the_flows_did_not_write_is_refused(home):
    (home / "results" / "notes.json").write_text('{"mine": true}')
    synthetic.write_netcdf(_small(), home / "results" / "input.nc")
    (home / "results" / "link.nc").symlink_to(home / "regions" / "gcp" / "daily" / "tas_2025.nc")
    before = _tree(home)
    for name, suffixes in [("notes.json", (".json",)), ("input.nc", (".nc",))]:
        with pytest.raises(ParameterError, match=f"'.*/{name}' already exists and was not written"):
            resolve_output(name, policy=_policy(home), suffixes=suffixes)
    with pytest.raises(ParameterError, match="already exists and was not written"):
        write_json({"n": 1}, str(home / "results" / "notes.json"))
    with pytest.raises(ParameterError, match="already exists and was not written"):
        write_result(_small(), str(home / "results" / "input.nc"))
    with pytest.raises(ParameterError, match="resolves to"):  # a link to a region's file: out of the root
        resolve_output("link.nc", policy=_policy(home))
    assert _tree(home) == before


def test_results_the_flows_wrote_are_replaced_again_atomically_without_overwrite(home):
    policy = _policy(home)
    for name in ("r.nc", "r.zarr"):
        target = resolve_output(name, policy=policy)
        write_result(_small(), target, policy=policy)
        check_replaceable(Path(target), overwrite=False)  # a flow's result: may be replaced
        write_result(_small() * 2, resolve_output(name, policy=policy), policy=policy)
        with xr.open_dataset(target, engine="zarr" if name.endswith(".zarr") else None) as ds:
            xr.testing.assert_allclose(ds.tas.load(), (_small() * 2).tas)
    target = resolve_output("r.json", policy=policy, suffixes=(".json",))
    write_json({"n": 1}, target, policy=policy)
    write_json({"n": 2}, resolve_output("r.json", policy=policy, suffixes=(".json",)), policy=policy)
    assert '"n": 2' in Path(target).read_text()
    assert sorted(os.listdir(home / "results")) == ["r.json", "r.nc", "r.zarr"]  # nothing half-written beside


def test_the_operators_allow_list_must_be_absolute(home):
    with pytest.raises(ParameterError, match="PROXIMATE_OUTPUT_ROOTS: 'results' is neither an absolute folder"):
        OutputPolicy.from_env({"PROXIMATE_OUTPUT_ROOTS": "results"})


def test_a_flow_refuses_outputs_in_a_saved_regions_root_before_any_cluster_work(prefect_server, tmp_path, monkeypatch):
    from blocks.region import Region
    from flows.analysis import compare_forecast_to_observations
    from flows.common import output_policy

    root = tmp_path / "regions" / "outguard"
    synthetic.write_netcdf(_small(), root / "daily" / "tas_2025.nc")
    Region(name="outguard", root=str(root), source_url="s3://outguard-bucket/data/").save("outguard", overwrite=True)
    monkeypatch.setenv("PROXIMATE_HOME", str(tmp_path))
    monkeypatch.setenv("PROXIMATE_OUTPUT_ROOTS", f"{tmp_path},s3://outguard-bucket/")
    policy = output_policy()
    assert policy.forbidden["region outguard"] == str(root)
    assert policy.forbidden["the source of region outguard"] == "s3://outguard-bucket/data/"
    before = _tree(tmp_path)
    for output, message in [
        ("../regions/outguard/daily/tas_2025.nc", "contains '..'"),
        (str(root / "daily" / "tas_2025.nc"), "data root of region outguard"),
        ("s3://outguard-bucket/data/x.nc", "inside the source of region outguard"),
    ]:
        with pytest.raises(ParameterError, match=message) as err:
            compare_forecast_to_observations(
                forecast="a:fc.nc", observations="b:obs.nc", output=output, scheduler_address="tcp://127.0.0.1:1"
            )
        assert err.value.parameter == "output" and output in str(err.value)
    assert _tree(tmp_path) == before

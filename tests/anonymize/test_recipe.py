"""Recipes: per-attribute rules on the profile, from Python and TOML, applied by the engine and
the stage, with their precedence, the allow-identifying rule and the audit record."""

from __future__ import annotations

import copy
import pickle

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

import dicomflow as dfl
from dicomflow.anonymize import (
    Crosswalk,
    Deidentifier,
    Deidentify,
    DeidOptions,
    Recipe,
    RecipeRule,
    explain,
    parse_target,
)
from dicomflow.errors import ConfigError
from dicomflow.pipeline import Instance

from .conftest import OTHER_SECRET, SECRET

#: A GE MR image: descriptors, device and institution names, private GEMS blocks (one of them
#: holding a private sequence), and public sequences nested one level.
MR = "series/dcm_qa_nih_ge_mr_0007/axial_epi_fmri_sequential_s_to_i-00002.dcm"


@pytest.fixture
def mr(corpus) -> pydicom.FileDataset:
    return pydicom.dcmread(corpus / MR)


def _run(ds, recipe, options=None, **kwargs):
    engine = Deidentifier(SECRET, options, recipe=recipe, **kwargs)
    return engine.deidentify(copy.deepcopy(ds))


# -- targets and rules ------------------------------------------------------------------------


def test_targets_parse_to_one_form() -> None:
    assert parse_target("(0008,103e)").text == "(0008,103E)"
    assert parse_target("0008103E").key == parse_target("SeriesDescription").key
    assert parse_target(" ( 0018 , xxxx ) ").text == "(0018,xxxx)"
    mask = parse_target("(60xx,4000)")
    assert mask.matches(0x60024000) and not mask.matches(0x60034000)  # odd groups are private
    assert parse_target('(0019,"GEMS_ACQU_01",9c)').text == '(0019,"GEMS_ACQU_01",9C)'
    assert parse_target('(0019,"GEMS_ACQU_01",XX)').kind == "block"
    assert parse_target("(0029,xxxx)").kind == "group"
    targets = ("ProtocolName", '(0019,"A",01)', '(0019,"A",xx)', "(60xx,4000)", "(0018,xxxx)")
    ranks = [parse_target(t).specificity for t in targets]
    assert ranks == [8, 8, 6, 6, 4]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("SeriesDescripton", "did you mean SeriesDescription"),
        ("(0008,10G0)", "cannot read the target"),
        ("(0008,103E", "cannot read the target"),
        ("(0019,100C)", 'by their creator, as \\(0019,"CREATOR",0C\\)'),
        ("(0019,10xx)", "named by creator"),
        ('(0008,"ACME",01)', "group 0008 is public"),
        ('(0005,"ACME",01)', "holds no private attributes"),
        ('(0019,"",01)', "Private Creator is empty"),
    ],
)
def test_bad_targets_are_named(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RecipeRule("keep", target)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (("kepe", "SeriesDescription"), "unknown recipe action 'kepe'; known: keep, remove"),
        (("replace", "InstitutionName"), "replace needs a value"),
        (("keep", "InstitutionName", "x"), "only replace takes a value"),
        (("replace", "StudyDate", "2024-01-01"), "Invalid value for VR DA"),
        (("replace", "Rows", "many"), "US needs whole numbers"),
        (("replace", "StationName", "x" * 17), "exceeds the maximum length of 16"),
        (("replace", "ReferencedImageSequence", "x"), "cannot write a value of VR SQ"),
        (("replace", "(0018,xxxx)", "x"), "needs one attribute"),
        (("pseudonymise", "SliceThickness"), "applies to AE, CS, LO, LT, PN, SH, ST, UC, UI, UT"),
        (("shift", "StudyTime"), "times of day do not change"),
        (("keep", "(0002,0010)"), "File Meta Information is regenerated"),
        (("remove", "PatientIdentityRemoved"), "written by dicomflow"),
        (("keep", "PixelData"), "Clean Pixel Data"),
        (("remove", "(7FE0,xxxx)"), "covers Pixel Data"),
        (("remove", "SpecificCharacterSet"), "character set"),
        (("keep", "(0008,0000)"), "group lengths"),
    ],
)
def test_invalid_rules_are_refused(rule: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RecipeRule(*rule)


def test_replace_values_are_converted_for_the_vr() -> None:
    assert RecipeRule("replace", "EchoTrainLength", 2).value == "2"  # IS is text
    assert RecipeRule("replace", "Rows", "64").value == 64
    assert RecipeRule("replace", "ImageType", ["DERIVED", "SECONDARY"]).value == (
        "DERIVED", "SECONDARY",
    )  # fmt: skip
    assert RecipeRule("pseudonymize", "StudyID").action == "pseudonymise"  # either spelling


# -- recipe files -----------------------------------------------------------------------------

SITE = """\
# what site A shares with the consortium
[recipe]
name = "site-a"
allow-identifying = ["SeriesDescription", "ProtocolName"]
date-shift-days = [-30, -30]
keep = ["SeriesDescription", "ProtocolName", "Modality"]
remove = ["(0008,1030)", "CodeMeaning"]
empty = ["ReferencedImageSequence"]
pseudonymise = ["StudyID"]
shift = ["StudyDate"]

[recipe.replace]
InstitutionName = "SITE-A"
'(0019,"GEMS_ACQU_01",9C)' = "EPI-PSD"
"""


def test_recipe_file_reads_into_rules() -> None:
    recipe = Recipe.from_toml(SITE, "site.toml")
    assert recipe.name == "site-a" and recipe.date_shift_days == (-30, -30)
    assert [r.describe() for r in recipe.rules] == [
        "keep SeriesDescription", "keep ProtocolName", "keep Modality", "remove (0008,1030)",
        "remove CodeMeaning", "empty ReferencedImageSequence",
        "replace InstitutionName = 'SITE-A'", "replace (0019,\"GEMS_ACQU_01\",9C) = 'EPI-PSD'",
        "pseudonymise StudyID", "shift StudyDate",
    ]  # fmt: skip
    allowed = {r.target for r in recipe.rules if r.allow_identifying}
    assert allowed == {"SeriesDescription", "ProtocolName"}
    assert {r.origin for r in recipe.rules} == {"site.toml"}
    again = Recipe.from_toml(recipe.to_toml())  # no file: the rules come from its name
    assert again.rules == tuple(RecipeRule(r.action, r.target, r.value, r.allow_identifying,
                                           "site-a") for r in recipe.rules)  # fmt: skip
    assert again.fingerprint == recipe.fingerprint and again.date_shift_days == (-30, -30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[recipe]\nkepe = ['SeriesDescription']\n", "unknown recipe settings.*did you mean keep"),
        ("[recipe]\nkeep = 'SeriesDescription'\n", "keep must be a list of targets"),
        ("[recipe]\nkeep = ['NotAKeyword']\n", "'NotAKeyword' is not a DICOM keyword"),
        ("[recipe]\nremove = ['(0008;1030)']\n", "cannot read the target"),
        ("[recipe]\nreplace = ['x']\n", "replace must be a table"),
        ("[recipe]\nkeep = [\n", "not valid TOML"),
        ("keep = ['Modality']\n", "holds one \\[recipe\\] table"),
        ("[recipe]\n[other]\n", "not \\['other'\\]"),
        ("[recipe]\nallow-identifying = ['ProtocolName']\n", "which the recipe does not keep"),
        ("[recipe]\nallow-identifying = 'yes'\n", "true, false or a list"),
        ("[recipe]\ndate-shift-days = [10, -10]\n", "is empty"),
        ("[recipe]\nkeep = ['ProtocolName']\nremove = ['(0018,1030)']\n", "conflicting rules"),
    ],
)
def test_invalid_recipe_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Recipe.from_toml(text, "site.toml")
    assert "site.toml" in str(info.value) or "conflicting" in str(info.value)


def test_load_names_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        Recipe.load(tmp_path / "missing.toml")
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    assert Recipe.load(path).rules[0].origin == str(path)


def test_layers_and_their_config_round_trip() -> None:
    file = Recipe.from_toml(SITE, "site.toml")
    cli = Recipe.of(remove=["SeriesDescription"], replace={"StationName": "ST1"}, origin="CLI")
    layered = file.then(cli)
    assert layered.layers == ("site.toml", "CLI")
    assert {r.layer for r in layered.rules if r.origin == "CLI"} == {1}
    again = Recipe.from_config(layered.to_config())
    assert again == layered and again.layers == layered.layers
    with pytest.raises(ConfigError, match="layered recipe"):
        layered.to_toml()


def test_overlapping_masks_of_one_layer_must_agree() -> None:
    with pytest.raises(ConfigError, match="equal specificity"):
        Recipe.of(keep=["(00x8,1030)"], remove=["(0008,10x0)"])
    Recipe.of(keep=["(0018,xxxx)"], remove=["(0018,10xx)"])  # narrower one wins: fine


# -- the engine -------------------------------------------------------------------------------


def test_keeping_identifying_attributes_needs_the_allowance(mr) -> None:
    recipe = Recipe.of(keep=["SeriesDescription", "ProtocolName", "Modality"])
    with pytest.raises(ConfigError) as info:
        Deidentifier(SECRET, recipe=recipe)
    message = str(info.value)
    assert "SeriesDescription (profile: X)" in message and "ProtocolName (profile: X/D)" in message
    assert "Modality" not in message and "--allow-identifying" in message
    assert recipe.identifying() == (("SeriesDescription", "profile: X"),
                                    ("ProtocolName", "profile: X/D"))  # fmt: skip
    # an Option that keeps the attribute makes the rule harmless
    device = Recipe.of(keep=["StationName"])
    assert device.identifying(DeidOptions(retain_device_identity=True)) == ()
    out, counts = _run(mr, Recipe.of(keep=["Modality"]))
    assert counts.retained == () and out.Modality == "MR"


def test_keep_is_recorded_in_the_audit_attributes(mr) -> None:
    recipe = Recipe.of(keep=["SeriesDescription", "ProtocolName", "OperatorsName"],
                       allow_identifying=True, name="site-a")  # fmt: skip
    out, counts = _run(mr, recipe)
    assert out.SeriesDescription == mr.SeriesDescription and out.ProtocolName == mr.ProtocolName
    assert counts.retained == (("ProtocolName", 1), ("SeriesDescription", 1))  # only what is there
    method = list(out.DeidentificationMethod)
    assert f"recipe site-a sha256:{recipe.fingerprint} (3 rules)" in method
    assert method[-2:] == ["kept identifying ProtocolName", "kept identifying SeriesDescription"]
    assert all(len(text) <= 64 for text in method)
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert counts.total == sum(counts.as_dict().values())


def test_each_action_on_a_corpus_image(mr) -> None:
    recipe = Recipe.from_toml(SITE, "site.toml")
    options = DeidOptions(retain_safe_private=True)
    out, counts = _run(mr, recipe, options)
    assert out.SeriesDescription == mr.SeriesDescription  # keep
    assert "StudyDescription" not in out  # remove (the profile would have too)
    assert "CodeMeaning" not in out.AnatomicRegionSequence[0]  # remove, one level down
    assert out.AnatomicRegionSequence[0].CodeValue == "T-A0100"
    assert out.ReferencedImageSequence == Sequence()  # empty: a sequence with no items
    assert out.InstitutionName == "SITE-A"  # replace
    study_id = out.StudyID  # pseudonymise: keyed, stable, not the original
    assert study_id.startswith("H") and len(study_id) == 16 and study_id != mr.StudyID
    assert _run(mr, recipe, options)[0].StudyID == study_id
    assert Deidentifier(OTHER_SECRET, options, recipe=recipe).deidentify(mr)[0].StudyID != study_id
    assert mr.StudyDate == "20180918" and out.StudyDate == "20180819"  # shift: -30 days
    assert out[0x0019109C].value == "EPI-PSD"  # replace a private attribute by creator
    assert out[0x0019109E].value == "EPI"  # Retain Safe Private still applies around it
    assert out[0x00190010].value == "GEMS_ACQU_01"
    assert counts.retained == (("ProtocolName", 1), ("SeriesDescription", 1))


def test_a_keyword_applies_at_every_nesting_level() -> None:
    ds = Dataset()
    ds.InstitutionName = "General Hospital"
    item = Dataset()
    item.CodeValue, item.CodeMeaning = "T-A0100", "Brain"
    item.InstitutionName = "General Hospital"
    inner = Dataset()
    inner.InstitutionName = "General Hospital"
    item.AnatomicRegionModifierSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([item])
    keep = Recipe.of(keep=["InstitutionName"], allow_identifying=True)
    out, counts = _run(ds, keep)
    assert out.InstitutionName == "General Hospital"
    assert out.AnatomicRegionSequence[0].InstitutionName == "General Hospital"
    assert out.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].InstitutionName == (
        "General Hospital"
    )
    assert counts.retained == (("InstitutionName", 3),)
    replaced, _ = _run(ds, Recipe.of(replace={"InstitutionName": "SITE-A"}))
    nested = replaced.AnatomicRegionSequence[0]
    assert [replaced.InstitutionName, nested.InstitutionName,
            nested.AnatomicRegionModifierSequence[0].InstitutionName] == ["SITE-A"] * 3  # fmt: skip


def test_a_kept_sequence_still_has_its_items_cleaned(mr) -> None:
    recipe = Recipe.of(keep=["ReferencedImageSequence"], allow_identifying=True)
    out, counts = _run(mr, recipe)
    assert len(out.ReferencedImageSequence) == 2
    item, original = out.ReferencedImageSequence[0], mr.ReferencedImageSequence[0]
    assert item.ReferencedSOPClassUID == original.ReferencedSOPClassUID
    assert item.ReferencedSOPInstanceUID != original.ReferencedSOPInstanceUID  # still U
    assert counts.retained == (("ReferencedImageSequence", 1),)


def test_private_attributes_by_creator(mr) -> None:
    one = Recipe.of(keep=['(0009,"GEMS_IDEN_01",04)'], allow_identifying=True)
    out, counts = _run(mr, one)
    privates = {e.tag for e in out if e.tag.is_private}
    assert privates == {0x00090010, 0x00091004} and out[0x00091004].value == "SIGNA"
    assert counts.retained == (('(0009,"GEMS_IDEN_01",04)', 1),)
    # a block, minus one element (the more specific rule), and a whole group
    recipe = Recipe.of(
        keep=['(0009,"GEMS_IDEN_01",xx)', "(0021,xxxx)"],
        remove=['(0009,"GEMS_IDEN_01",30)'],
        allow_identifying=True,
    )
    out, _ = _run(mr, recipe)
    group_09 = {e.tag for e in mr if e.tag.group == 0x0009 and e.tag.element} - {0x00091030}
    assert {e.tag for e in out if e.tag.group == 0x0009} == group_09
    assert {e.tag for e in out if e.tag.group == 0x0021} == {
        e.tag for e in mr if e.tag.group == 0x0021 and e.tag.element
    }
    # a creator that reserves no kept attribute is not written; a wrong creator matches nothing
    out, _ = _run(mr, Recipe.of(keep=['(0009,"GEMS_IDEN_02",04)'], allow_identifying=True))
    assert not any(e.tag.is_private for e in out)


def test_a_private_rule_that_does_not_fit_fails_closed(mr) -> None:
    """A private attribute's VR is known only in the instance: a misfit fails it."""
    from dicomflow.anonymize import DeidentificationError

    block = '(0023,"GEMS_STDY_01",xx)'
    counter = '(0023,"GEMS_STDY_01",74)'  # SL
    for rule in ({"pseudonymise": [counter]}, {"shift": [counter]}, {"replace": {counter: "x"}}):
        recipe = Recipe.of(keep=[block], allow_identifying=True, **rule)
        with pytest.raises(DeidentificationError, match="GEMS_STDY_01"):
            _run(mr, recipe)
    out, _ = _run(mr, Recipe.of(keep=[block], replace={counter: "7"}, allow_identifying=True))
    assert out[0x00231074].value == 7 and len(out[0x00231080].value) == 1  # its private SQ too


def test_a_safe_private_keep_is_not_identifying(mr) -> None:
    safe = Recipe.of(keep=['(0019,"GEMS_ACQU_01",9E)'])
    assert safe.identifying(DeidOptions(retain_safe_private=True)) == ()
    assert safe.identifying() == (('(0019,"GEMS_ACQU_01",9E)', "private: profile X"),)
    out, counts = _run(mr, safe, DeidOptions(retain_safe_private=True))
    assert out[0x0019109E].value == "EPI" and counts.retained == ()
    removed, _ = _run(mr, Recipe.of(remove=['(0019,"GEMS_ACQU_01",9E)']),
                      DeidOptions(retain_safe_private=True))  # fmt: skip
    assert 0x0019109E not in removed  # the recipe wins over Retain Safe Private


def test_precedence(mr) -> None:
    device = DeidOptions(retain_device_identity=True)
    # recipe over the Options: the Option keeps Station Name, the recipe removes it
    out, _ = _run(mr, Recipe.of(remove=["StationName"]), device)
    assert "StationName" not in out and out.DeviceSerialNumber == mr.DeviceSerialNumber
    # within one layer the most specific target wins: the mask keeps, the keyword removes
    both = Recipe.of(keep=["(0018,xxxx)"], remove=["ProtocolName"], allow_identifying=True)
    out, counts = _run(mr, both)
    assert "ProtocolName" not in out and out.DeviceSerialNumber == mr.DeviceSerialNumber
    assert ("DeviceSerialNumber", 1) in counts.retained  # recorded per attribute
    assert ("SliceThickness", 1) not in counts.retained  # the profile keeps it anyway
    # a later layer wins whatever its specificity: the command line over the file
    file = Recipe.of(keep=["ProtocolName"], allow_identifying=True, origin="site.toml")
    cli = Recipe.of(remove=["(0018,xxxx)"], origin="command line")
    out, _ = _run(mr, file.then(cli))
    assert "ProtocolName" not in out and "DeviceSerialNumber" not in out
    out, _ = _run(mr, cli.then(file))
    assert out.ProtocolName == mr.ProtocolName


def test_pseudonyms_follow_the_lookup_and_go_to_the_crosswalk(mr) -> None:
    recipe = Recipe.of(pseudonymise=["StudyID", "PatientID", "StudyInstanceUID"])
    engine = Deidentifier(SECRET, recipe=recipe, lookup={"StudyID": {"27018": "S-001"}})
    pairs = Crosswalk()
    out, counts = engine.deidentify(mr, crosswalk=pairs)
    plain, _ = Deidentifier(SECRET).deidentify(mr)
    assert out.StudyID == "S-001"
    assert out.PatientID == plain.PatientID  # the engine's patient pseudonym
    assert out.StudyInstanceUID == plain.StudyInstanceUID  # the engine's UID
    assert ("StudyID", "27018", "S-001") in set(pairs)


def test_date_shift_precedence(mr) -> None:
    recipe = Recipe.of(shift=["StudyDate"], date_shift_days=(-1, -1))
    assert _run(mr, recipe)[0].StudyDate == "20180917"
    stage = Deidentify(secret=SECRET, recipe=recipe)
    assert stage.date_shift_days == (-1, -1)
    explicit = Deidentify(secret=SECRET, recipe=recipe, date_shift_days=(-2, -2))
    instance = explicit(Instance.from_dataset(copy.deepcopy(mr)))
    assert instance.dataset.StudyDate == "20180916"  # the caller's range over the recipe's


def test_explain_gives_the_rule_as_the_reason(mr) -> None:
    file = Recipe.from_toml(SITE, "site.toml")
    cli = Recipe.of(keep=['(0009,"GEMS_IDEN_01",04)'], allow_identifying=True, origin="CLI")
    recipe = file.then(cli)
    rows = {r.attribute: r for r in explain(mr, recipe=recipe)}
    keep = rows["(0008,103E) SeriesDescription"]
    assert (keep.action, keep.meaning) == ("K", "keep")
    assert keep.reason == "site.toml: keep SeriesDescription (identifying; allowed, recorded)"
    assert rows["(0008,0080) InstitutionName"].reason == (
        "site.toml: replace InstitutionName = 'SITE-A'"
    )
    assert rows["(0008,2218) AnatomicRegionSequence[0]>(0008,0104) CodeMeaning"].action == "X"
    private = rows["(0009,1004) private GEMS_IDEN_01"]
    assert private.reason.startswith('CLI: keep (0009,"GEMS_IDEN_01",04)')
    assert rows["(0009,0010) private creator"].action == "K"
    assert rows["(0009,1002) private GEMS_IDEN_01"].action == "X"
    with pytest.raises(ConfigError, match="ProtocolName"):
        explain(mr, recipe=Recipe.of(keep=["ProtocolName"]))


def test_engine_with_a_recipe_pickles(mr) -> None:
    engine = Deidentifier(SECRET, recipe=Recipe.from_toml(SITE), allow_identifying=True)
    clone = pickle.loads(pickle.dumps(engine))
    one, _ = engine.deidentify(mr)
    two, _ = clone.deidentify(mr)
    assert one == two and clone.recipe == engine.recipe and clone.allow_identifying


# -- the stage and the manifest ----------------------------------------------------------------


def test_stage_config_records_the_recipe(tmp_path, secret_file) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    stage = Deidentify(secret_file=secret_file, recipe=str(path), options=["retain-safe-private"])
    config = stage.config()
    assert config["recipe_identifying"] == ["SeriesDescription", "ProtocolName"]
    assert config["recipe"]["layers"][0]["origin"] == str(path)
    assert config["date_shift_days"] == [-30, -30] and "allow_identifying" not in config
    again = Deidentify.from_config(config)
    assert again.config() == config and again.recipe == stage.recipe
    # a table in a pipeline file works too, with the same schema as a recipe file
    table = Deidentify(secret=SECRET, recipe={"keep": ["Modality"]})
    assert table.config()["recipe"]["layers"] == [{"keep": ["Modality"]}]
    other = Deidentify(secret=SECRET, recipe=str(path), options=["retain-safe-private"],
                       allow_identifying=True)  # fmt: skip
    assert other.config()["allow_identifying"] is True
    with pytest.raises(ConfigError, match="ProtocolName"):
        Deidentify(secret=SECRET, recipe={"keep": ["ProtocolName"]})


def test_manifest_rows_list_the_kept_identifying_attributes(tmp_path, corpus) -> None:
    src = corpus / MR
    recipe = Recipe.of(keep=["SeriesDescription"], allow_identifying=True)
    run = (dfl.pipeline([str(src)]) | Deidentify(secret=SECRET, recipe=recipe)).write(
        dfl.writers.Part10Folder(str(tmp_path / "share"))
    )
    report = run.execute(workers=1, manifest=str(tmp_path / "manifests"))
    import json

    rows = report.manifest.to_pylist()
    assert [r["status"] for r in rows] == ["done"]
    counts = json.loads(rows[0]["counts"])
    assert counts["deid.retained.SeriesDescription"] == 1 and counts["deid.K"] > 0

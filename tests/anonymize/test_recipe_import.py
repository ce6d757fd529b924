"""Converting CTP DicomAnonymizer scripts and pydicom/deid recipes into recipes: what maps is
converted, what does not is listed with its line and the conversion refused."""

from __future__ import annotations

import pydicom
import pytest

from dicomflow.anonymize import Deidentifier, Recipe, convert_ctp, convert_deid
from dicomflow.errors import ConfigError

from .conftest import SECRET
from .test_recipe import MR

#: A site's CTP script (written for these tests): the usual functions, a private element by
#: creator, a group kept, the global switches, and disabled entries.
CTP = """\
<script>
 <p t="DATEINC">-30</p>
 <p t="UIDROOT">1.2.840.99999.1</p>
 <p t="SITENAME">SITE-A</p>
 <e en="T" t="00080016" n="SOPClassUID">@keep()</e>
 <e en="T" t="00080018" n="SOPInstanceUID">@hashuid(@UIDROOT,this)</e>
 <e en="T" t="00080020" n="StudyDate">@incrementdate(this,@DATEINC)</e>
 <e en="F" t="00080030" n="StudyTime">@keep()</e>
 <e en="T" t="00080050" n="AccessionNumber">@hash(this,16)</e>
 <e en="T" t="00080080" n="InstitutionName">@param(@SITENAME)</e>
 <e en="T" t="00080090" n="ReferringPhysicianName">@empty()</e>
 <e en="T" t="00081010" n="StationName">SCANNER-1</e>
 <e en="T" t="0008103e" n="SeriesDescription">@keep()</e>
 <e en="T" t="00081030" n="StudyDescription">@remove()</e>
 <e en="T" t="00081140" n="RefImageSeq">@process()</e>
 <e en="T" t="00100010" n="PatientName">@hashname(this,6,2)</e>
 <e en="T" t="00100020" n="PatientID">@hash(this,10)</e>
 <e en="T" t="00120062" n="PatientIdentityRemoved">@always()YES</e>
 <e en="T" t="0019[GEMS_ACQU_01]9c" n="PulseSequenceName">@keep()</e>
 <k en="T" t="0018">Keep group 0018</k>
 <k en="F" t="0028">Keep group 0028</k>
 <r en="T" t="privategroups">Remove private groups</r>
 <r en="F" t="unspecifiedelements">Remove unchecked elements</r>
</script>
"""

#: Everything here has no recipe form (or contradicts an earlier line).
CTP_UNMAPPED = """\
<script>
 <p t="DATEINC">-30</p>
 <e en="T" t="00080020" n="StudyDate">@incrementdate(this,@DATEINC)</e>
 <e en="T" t="00080021" n="SeriesDate">@incrementdate(this,-10)</e>
 <e en="T" t="00100020" n="PatientID">@lookup(this,ptid)</e>
 <e en="T" t="00080012" n="InstanceCreationDate">@date(yyyyMMdd)</e>
 <e en="T" t="00200010" n="StudyID">@always()@empty()</e>
 <e en="T" t="00120040" n="ClinicalTrialSubjectID">@hashptid(@SITEID,PatientID)</e>
 <e en="T" t="00191010" n="SomePrivate">@keep()</e>
 <e en="T" t="00080060" n="Modality">@require()</e>
 <e en="T" t="00080030" n="StudyTime">@incrementdate(this,@DATEINC)</e>
 <e en="T" t="00081010" n="StationName"></e>
 <r en="T" t="unspecifiedelements">Remove unchecked elements</r>
 <x en="T" t="0010"/>
</script>
"""

#: A deid recipe (written for these tests).
DEID = """\
FORMAT dicom

# site A: keep what selects series, shift dates a month back
%header

ADD PatientIdentityRemoved YES
KEEP SeriesDescription
KEEP ProtocolName
REMOVE ProtocolName
BLANK ReferringPhysicianName
REPLACE InstitutionName SITE A
JITTER StudyDate -30
JITTER SeriesDate -30
REMOVE (0008,1030)
REMOVE OperatorsName

%labels
Maintainer site-a
"""

DEID_UNMAPPED = """\
FORMAT dicom
%filter dangerouscookie
LABEL Criteria for Dangerous Cookie
contains PatientSex M
%header
REMOVE ALL
REPLACE PatientID var:id
ADD ClinicalTrialSiteID 42
BLANK startswith:Patient
JITTER StudyTime 3
JITTER StudyDate 10
JITTER SeriesDate 20
KEEP NotAKeyword
FROB SeriesDescription
KEEP SeriesDescription
KEEP (0008,103E)
"""


def test_ctp_script_converts(corpus) -> None:
    conversion = convert_ctp(CTP, "site.script")
    assert conversion.ok and conversion.unmapped == ()
    recipe = conversion.require()
    rules = {(r.action, r.target, r.value) for r in recipe.rules}
    assert rules == {
        ("keep", "SOPClassUID", None), ("pseudonymise", "SOPInstanceUID", None),
        ("shift", "StudyDate", None), ("pseudonymise", "AccessionNumber", None),
        ("replace", "InstitutionName", "SITE-A"), ("empty", "ReferringPhysicianName", None),
        ("replace", "StationName", "SCANNER-1"), ("keep", "SeriesDescription", None),
        ("remove", "StudyDescription", None), ("keep", "ReferencedImageSequence", None),
        ("pseudonymise", "PatientName", None), ("pseudonymise", "PatientID", None),
        ("keep", '(0019,"GEMS_ACQU_01",9C)', None), ("keep", "(0018,xxxx)", None),
    }  # fmt: skip
    assert recipe.date_shift_days == (-30, -30)  # the script's fixed increment
    notes = " | ".join(conversion.notes)
    assert "line 18: PatientIdentityRemoved is written by dicomflow itself" in notes
    assert "remove privategroups: the Basic Profile removes them" in notes
    assert '3 disabled entries (en="F") ignored' in notes
    text = conversion.to_toml()
    assert "# converted by dicomflow from the CTP DicomAnonymizer script site.script" in text
    assert "CTP line 13:" in text and "needs --allow-identifying" in text
    again = Recipe.from_toml(text)
    assert {(r.action, r.target, r.value) for r in again.rules} == rules
    assert Recipe.from_ctp(CTP).fingerprint == recipe.fingerprint
    # applied: the script's meaning, dicomflow's way
    ds = pydicom.dcmread(corpus / MR)
    out, counts = Deidentifier(SECRET, recipe=recipe, allow_identifying=True).deidentify(ds)
    assert out.StudyDate == "20180819"  # exactly DATEINC days
    assert out.InstitutionName == "SITE-A" and out.StationName == "SCANNER-1"
    assert out.SeriesDescription == ds.SeriesDescription
    assert out.DeviceSerialNumber == ds.DeviceSerialNumber  # <k t="0018">
    assert out[0x0019109C].value == "epiRT" and "StudyDescription" not in out
    assert out.SOPInstanceUID.startswith("2.25.")  # keyed UIDs, not CTP's root
    assert ("DeviceSerialNumber", 1) in counts.retained


def test_ctp_rules_that_do_not_map_are_listed_and_refused() -> None:
    conversion = convert_ctp(CTP_UNMAPPED, "bad.script")
    assert not conversion.ok
    found = {u.line: u.reason for u in conversion.unmapped}
    assert "one recipe has one shift range" in found[4]
    assert "--lookup" in found[5]
    assert "not deterministic" in found[6]
    assert "recipes do not add attributes" in found[7] and "recipes do not add" in found[10]
    assert "derived from another attribute" in found[8]
    assert "gggg[Creator]ee" in found[9]
    assert "times of day do not change" in found[11]
    assert "without a script" in found[12]
    assert "no recipe form" in found[13]
    assert "not a DicomAnonymizer entry" in found[14]
    assert sorted(found) == list(range(4, 15))
    assert [r.target for r in conversion.recipe.rules] == ["StudyDate"]  # what did map
    with pytest.raises(ConfigError) as info:
        conversion.require()
    message = str(info.value)
    assert message.startswith("bad.script: 11 rules of the CTP DicomAnonymizer script")
    assert all(f"line {n}:" in message for n in range(4, 15))
    with pytest.raises(ConfigError, match="11 rules"):
        Recipe.from_ctp(CTP_UNMAPPED)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<script><e>", "not a readable XML file"),
        ("<anonymizer/>", "no <script> root"),
        ('<!DOCTYPE s [<!ENTITY a "b">]><script/>', "DOCTYPE is not allowed"),
    ],
)
def test_unreadable_ctp_scripts_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        convert_ctp(text)


def test_deid_recipe_converts() -> None:
    conversion = convert_deid(DEID, "deid.dicom")
    assert conversion.ok
    recipe = conversion.recipe
    assert {(r.action, r.target, r.value) for r in recipe.rules} == {
        ("keep", "SeriesDescription", None), ("keep", "ProtocolName", None),
        ("empty", "ReferringPhysicianName", None), ("replace", "InstitutionName", "SITE A"),
        ("shift", "StudyDate", None), ("shift", "SeriesDate", None),
        ("remove", "(0008,1030)", None), ("remove", "OperatorsName", None),
    }  # fmt: skip
    assert recipe.date_shift_days == (-30, -30)
    notes = " | ".join(conversion.notes)
    assert "line 9: REMOVE overridden by KEEP on line 8 (deid's precedence)" in notes
    assert "PatientIdentityRemoved is written by dicomflow" in notes
    assert "label 'Maintainer site-a' ignored" in notes
    assert "deid line 13:" in conversion.to_toml()


def test_deid_rules_that_do_not_map_are_listed_and_refused() -> None:
    conversion = convert_deid(DEID_UNMAPPED, "deid.bad")
    found = {u.line: u.reason for u in conversion.unmapped}
    assert "%filter section has no recipe form" in found[2]
    assert "inside the %filter section" in found[3] and "inside" in found[4]
    assert "field expander" in found[6] and "field expander" in found[9]
    assert "var:/func:" in found[7]
    assert "recipes do not add attributes" in found[8]
    assert "times of day do not change" in found[10]
    assert "line 11 uses 10" in found[12]
    assert "not a DICOM keyword" in found[13]
    assert "unknown action 'FROB'" in found[14]
    assert "a second KEEP for (0008,103E) (line 15)" in found[16]  # keyword and tag: one field
    assert sorted(found) == [2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 16]
    with pytest.raises(ConfigError, match="12 rules of the deid recipe"):
        conversion.require()


def test_deid_needs_its_format_line() -> None:
    with pytest.raises(ConfigError, match="must be 'FORMAT dicom'"):
        convert_deid("%header\nKEEP Modality\n")
    with pytest.raises(ConfigError, match="empty"):
        convert_deid("# nothing\n")

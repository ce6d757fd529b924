def test_the_recipe_keeps_a_manifest_names_follow_the_recipe_precedence() -> None:
    """What verify-deid reads as kept from a manifest: the winning rule per attribute, however
    its target is spelt. A file keeping (0010,0010) under a command line removing PatientName
    keeps nothing (it was read as kept: a real leak would have been listed as kept)."""
    from dicomflow.anonymize import Recipe
    from dicomflow.anonymize._verify_folders import _kept_by

    file = Recipe.of(keep=["(0010,0010)", "(0008,103E)"], allow_identifying=True)
    cli = Recipe.of(remove=["PatientName"])
    recipe = Recipe.from_config(file.then(cli).to_config())
    assert _kept_by(recipe) == {"SeriesDescription"}
    assert _kept_by(Recipe.from_config(cli.then(file).to_config())) == {
        "PatientName", "SeriesDescription",
    }  # fmt: skip

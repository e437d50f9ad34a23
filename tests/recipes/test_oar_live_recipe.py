"""The OAR Live recipes: their procedure, what their checkpoints depend on, their input checks,
and what differs between the two Debian releases."""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.compile import compile_macrostep
from builder.engine import BuildOptions, Engine
from builder.errors import RecipeError
from builder.progress import Progress
from builder.recipe import load_recipe
from builder.variables import Variables

PROJECT = Path(__file__).resolve().parents[2]
RECIPE = PROJECT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml"
TRIXIE = PROJECT / "recipes" / "debian-trixie-x86_64-oar-2.6-iso.yaml"
ALL_OUTPUTS = {"output": "iso,tgz,qcow2,raw,vmdk,pxe", "pxe_url": "http://10.0.0.1/oar"}
SYSTEM_STEPS = ["bootstrap", "system_configuration", "kernel_install", "oar_install", "oar_init",
                "cpusets", "mpi", "web", "nfs_home", "agent_install", "clean"]  # fmt: skip
# Never checkpointed: this build's own secrets, then the artifacts.
EXPORTS = ["personalize", "export_prepare", "export_iso", "export_pxe", "export_tgz", "export_disk",
           "export_manifest"]  # fmt: skip


def keys(tmp_path: Path, **overrides: str) -> dict[str, str]:
    recipe = load_recipe(RECIPE, overrides)
    engine = Engine(recipe, BuildOptions(workdir=tmp_path / "w", cwd=tmp_path),
                    Progress(stream=io.StringIO()))  # fmt: skip
    return dict(zip([m.name for m in recipe.macrosteps], engine.keys(), strict=True))


def test_the_procedure_builds_the_system_then_exports_without_checkpoints():
    recipe = load_recipe(RECIPE)
    assert [m.name for m in recipe.macrosteps] == SYSTEM_STEPS + EXPORTS
    assert all(m.checkpoint for m in recipe.macrosteps if m.name in SYSTEM_STEPS)
    assert not any(m.checkpoint for m in recipe.macrosteps if m.name in EXPORTS)


def test_every_build_draws_its_own_secrets_after_the_checkpointed_system():
    recipe = load_recipe(RECIPE)
    personalize = recipe.macrostep("personalize")
    oar_init = recipe.macrostep("oar_init")
    assert not personalize.checkpoint
    shared = ["generate_secrets", "oar_ssh_keys"]
    assert [m.name for m in personalize.microsteps][:2] == shared
    assert [m.name for m in oar_init.microsteps][:2] == shared
    assert personalize.microsteps[0].commands == oar_init.microsteps[0].commands


def test_the_secrets_and_oar_conf_are_written_by_the_agents_module_only():
    """autoconf.oarconf is the one writer: no step file writes them in shell."""
    recipe = load_recipe(RECIPE)
    (command,) = recipe.macrostep("oar_init").microsteps[0].commands
    assert "-m autoconf.oarconf --root . --new-secrets" in str(command)
    for path in (PROJECT / "recipes" / "steps").rglob("*.yaml"):
        code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
        for written in ("/etc/oar-live/secrets.yaml", "/etc/oar-live/config.yaml",
                        "DB_BASE_PASSWD=", "chmod 0640"):
            assert not any(written in ln for ln in code), (path, written)


def test_asking_for_other_outputs_reuses_every_checkpoint_of_the_system(tmp_path):
    default = keys(tmp_path)
    other = keys(tmp_path, output="tgz,qcow2,pxe", pxe_url="http://10.0.0.1/x", out_dir="/tmp/o")
    assert [default[s] == other[s] for s in SYSTEM_STEPS] == [True] * len(SYSTEM_STEPS)


def test_extra_packages_rebuild_from_the_oar_installation_on(tmp_path):
    default = keys(tmp_path)
    extra = keys(tmp_path, extra_packages="openmpi-bin,stress-ng")
    changed = [s for s in SYSTEM_STEPS if default[s] != extra[s]]
    assert changed == SYSTEM_STEPS[SYSTEM_STEPS.index("oar_install"):]


def test_editing_the_boot_menu_rebuilds_only_from_the_agent_installation(tmp_path, monkeypatch):
    """The menu source is a variable: its content is in the agent_install key (engine contract)."""
    recipe = load_recipe(RECIPE)
    neutral = Variables(recipe.variables, recipe.variable_lines, recipe.path,
                        {"workdir": "@w@", "build_dir": "@b@", "recipe_dir": str(recipe.dir),
                         "recipe_name": recipe.name, "cwd": "@c@", "python": "@p@"})  # fmt: skip
    used = {name for m in recipe.macrosteps if m.name in SYSTEM_STEPS
            for name in compile_macrostep(m, neutral).used_variables}  # fmt: skip
    assert "menu_src" in used and "agent_src" in used and "boot_src" in used
    first_user = next(m.name for m in recipe.macrosteps
                      if "menu_src" in compile_macrostep(m, neutral).used_variables)  # fmt: skip
    assert first_user == "agent_install"


def check_script(
    tmp_path: Path, step: str, micro: str, recipe_path: Path = RECIPE, **overrides: str
) -> subprocess.CompletedProcess:
    """Run one microstep's exec_current script as the engine would substitute it."""
    recipe = load_recipe(recipe_path, overrides)
    variables = Variables(recipe.variables, recipe.variable_lines, recipe.path,
                          {"workdir": str(tmp_path / "root"), "build_dir": str(tmp_path),
                           "recipe_dir": str(recipe.dir), "recipe_name": recipe.name,
                           "cwd": str(tmp_path), "python": "python3"})  # fmt: skip
    micro_step = next(m for m in recipe.macrostep(step).microsteps if m.name == micro)
    script = "\n".join(variables.substitute(c.args[0], c.path, c.line)
                       for c in micro_step.commands)  # fmt: skip
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], capture_output=True,
                          text=True)  # fmt: skip


@pytest.mark.spawns
@pytest.mark.parametrize(
    ("step", "micro", "overrides", "message"),
    [
        ("export_prepare", "check_outputs", {"output": "iso,floppy"}, "output 'floppy' is unknown"),
        ("export_prepare", "check_outputs", {"output": "pxe"}, "--set pxe_url=http://"),
        ("kernel_install", "check_kernel_package", {"kernel": "vmlinuz"},
         "kernel 'vmlinuz' is not a Debian kernel package"),
    ],
)
def test_unknown_inputs_stop_the_build_with_the_accepted_values(tmp_path, step, micro, overrides,
                                                                 message):
    result = check_script(tmp_path, step, micro, **overrides)
    assert result.returncode == 1
    assert message in result.stderr


@pytest.mark.spawns
def test_known_inputs_pass_the_checks(tmp_path):
    ok = check_script(tmp_path, "export_prepare", "check_outputs", output="iso,tgz,qcow2,raw,pxe",
                      pxe_url="http://10.0.0.1/oar")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert check_script(tmp_path, "kernel_install", "check_kernel_package",
                        kernel="linux-image-rt-amd64").returncode == 0
    assert check_script(tmp_path, "export_prepare", "check_outputs", output="vmdk").returncode == 0


# --- two Debian releases, one set of steps -------------------------------------------------


def _dry_run(path: Path, tmp_path: Path, **overrides: str) -> str:
    recipe = load_recipe(path, overrides)
    engine = Engine(recipe, BuildOptions(workdir=tmp_path / "w", cwd=tmp_path),
                    Progress(stream=io.StringIO()))  # fmt: skip
    return "\n".join(code.body for code in engine.compile_all())


def test_both_releases_run_the_same_procedure_and_differ_in_three_files():
    bookworm, trixie = load_recipe(RECIPE), load_recipe(TRIXIE)
    assert [m.name for m in trixie.macrosteps] == [m.name for m in bookworm.macrosteps]
    steps = PROJECT / "recipes" / "steps"
    own = {d: sorted(p.name for p in (steps / d).iterdir())
           for d in ("debian-bookworm", "debian-trixie")}  # fmt: skip
    assert own["debian-bookworm"] == own["debian-trixie"] == [
        "cpusets.yaml", "oar_services.yaml"]
    for recipe in (bookworm, trixie):
        assert {m.path.parent.name for m in recipe.macrosteps} == {"common"} | (
            {"debian-bookworm"} if recipe is bookworm else {"debian-trixie"})


def test_trixie_boots_on_cgroup_v2_with_oar_2_6s_systemd_job_manager(tmp_path):
    trixie = _dry_run(TRIXIE, tmp_path, **ALL_OUTPUTS)
    assert "unified_cgroup_hierarchy" not in trixie and "legacy_systemd" not in trixie
    assert "manager=/etc/oar/job_resource_manager.pl" in trixie
    assert "job_resource_manager_cgroups.pl" not in trixie
    assert "/etc/oar/dont_reboot" in trixie
    assert "pam-auth-update --package --remove oar-node" in trixie
    assert "systemctl mask oar.target oar-node-script.service" in trixie
    assert "unit=/usr/local/lib/systemd/system/oar-node.service" in trixie  # below /run's masks
    assert "> /etc/systemd/system/oar-node.service" not in trixie
    assert "postgresql oar-server oar-server-pgsql" in trixie
    bookworm = _dry_run(RECIPE, tmp_path, **ALL_OUTPUTS)
    assert bookworm.count("systemd.unified_cgroup_hierarchy=0") >= 6   # every boot entry


@pytest.mark.parametrize(("recipe", "overrides", "message"), [
    (TRIXIE, {"suite": "bookworm"}, "suite 'bookworm' is not supported by this recipe (choices: "
                                    "trixie); debian-bookworm-x86_64-oar-2.5-iso.yaml beside it "
                                    "takes suite=bookworm"),
    (RECIPE, {"suite": "trixie"}, "suite 'trixie' is not supported by this recipe (choices: "
                                  "bookworm); debian-trixie-x86_64-oar-2.6-iso.yaml beside it "
                                  "takes suite=trixie"),
    (TRIXIE, {"suite": "sid"}, "suite 'sid' is not supported by this recipe (choices: trixie)"),
    (TRIXIE, {"distrib": "debian-bookworm"}, "distrib 'debian-bookworm' is not supported"),
    (RECIPE, {"arch": "arm64"}, "arch 'arm64' is not supported by this recipe (choices: amd64)"),
])
def test_each_recipe_refuses_the_suites_and_arches_it_does_not_support(recipe, overrides,
                                                                      message):
    with pytest.raises(RecipeError) as refused:
        load_recipe(recipe, overrides)
    assert refused.value.exit_status == 2
    assert refused.value.message.startswith(f"{recipe.resolve()}:")
    assert message in refused.value.message and "\n" not in refused.value.message
    assert load_recipe(recipe).variables["arch"] == "amd64"


@pytest.mark.spawns
def test_build_iso_refuses_another_suite_before_any_step_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "builder.cli", str(TRIXIE), "--set",
                             "suite=bookworm", "--workdir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"build-iso: error: {TRIXIE.resolve()}:{_choices_line(TRIXIE, 'suite')}: suite 'bookworm' "
        "is not supported by this recipe (choices: trixie); "
        "debian-bookworm-x86_64-oar-2.5-iso.yaml beside it takes suite=bookworm"]
    assert not (tmp_path / "w").exists()


def _choices_line(path: Path, name: str) -> int:
    lines = path.read_text().splitlines()
    start = lines.index("choices:")
    return next(n for n, line in enumerate(lines[start:], start + 1)
                if line.strip().startswith(f"{name}:"))


def test_the_releases_share_the_apt_cache_the_checkpoint_store_and_the_host_mirror():
    bookworm, trixie = load_recipe(RECIPE), load_recipe(TRIXIE)
    assert bookworm.variables["apt_cache"] == trixie.variables["apt_cache"]
    assert bookworm.variables["workdir_base"] == trixie.variables["workdir_base"]
    assert bookworm.variables["mirror"] == trixie.variables["mirror"] == ""


def test_the_releases_differ_only_in_their_distribution_knobs():
    """Every other knob (accounts, secrets, paths, packages) is the same, so a change made to
    one release's recipe and forgotten in the other fails here."""
    bookworm, trixie = load_recipe(RECIPE), load_recipe(TRIXIE)
    differ = {k for k in bookworm.variables.keys() | trixie.variables.keys()
              if bookworm.variables.get(k) != trixie.variables.get(k)}
    assert differ <= {"distrib", "suite", "oar_version", "cgroup_cmdline", "recipe_name",
                      "dpkg_exclude"}, differ  # trixie leaves ROCm's unused libraries out


@pytest.mark.parametrize("path", [RECIPE, TRIXIE], ids=lambda p: p.name)
def test_no_recipe_carries_a_password_every_image_would_share(path):
    assert load_recipe(path).variables["job_user_password"] == ""


def test_editing_the_boot_menu_changes_the_keys_from_the_agent_installation_on(tmp_path):
    project = tmp_path / "project"
    for part in ("recipes", "isolinux", "autoconf", "boot"):
        shutil.copytree(PROJECT / part, project / part,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    recipe_path = project / "recipes" / RECIPE.name

    def project_keys() -> dict[str, str]:
        recipe = load_recipe(recipe_path)
        engine = Engine(recipe, BuildOptions(workdir=tmp_path / "w", cwd=tmp_path),
                        Progress(stream=io.StringIO()))  # fmt: skip
        return dict(zip([m.name for m in recipe.macrosteps], engine.keys(), strict=True))

    before = project_keys()
    menu = project / "isolinux" / "menu.yaml"
    menu.write_text(menu.read_text().replace("timeout: 10 ", "timeout: 9 "))
    after = project_keys()
    changed = [s for s in SYSTEM_STEPS if before[s] != after[s]]
    assert changed == ["agent_install", "clean"]


def _neutral(recipe) -> Variables:
    return Variables(recipe.variables, recipe.variable_lines, recipe.path,
                     {"workdir": "@w@", "build_dir": "@b@", "recipe_dir": str(recipe.dir),
                      "recipe_name": recipe.name, "cwd": "@c@", "python": "@p@"})  # fmt: skip


def test_a_secrets_file_rebuilds_from_the_database_creation_and_keeps_postgresql_stopped(tmp_path):
    """With a build secrets file oar_init creates the database with its passwords (the key
    follows its content) and personalize does not start PostgreSQL again (same bytes)."""
    given = tmp_path / "build-secrets.yaml"
    given.write_text("token: 1\n")
    default = keys(tmp_path)
    first = keys(tmp_path, secrets=str(given))
    changed = [s for s in SYSTEM_STEPS if default[s] != first[s]]
    assert changed == SYSTEM_STEPS[SYSTEM_STEPS.index("oar_init"):]
    given.write_text("token: 2\n")
    assert keys(tmp_path, secrets=str(given))["oar_init"] != first["oar_init"]
    for secrets, restarts in (("", True), (str(given), False)):
        recipe = load_recipe(RECIPE, {"secrets": secrets})
        body = compile_macrostep(recipe.macrostep("personalize"), _neutral(recipe)).body
        assert ("pg_ctlcluster" in body) is restarts, secrets


@pytest.mark.parametrize("recipe", [RECIPE, TRIXIE], ids=["bookworm", "trixie"])
def test_every_uefi_output_boots_debians_signed_shim_and_grub(recipe):
    loaded = load_recipe(recipe, ALL_OUTPUTS)
    bodies = {m.name: compile_macrostep(m, _neutral(loaded)).body for m in loaded.macrosteps}
    assert "grub-mkstandalone" not in "".join(bodies.values())  # no unsigned UEFI loader
    assert "shim-signed" in bodies["export_prepare"]
    for step, loader in (("export_iso", "gcdx64.efi"), ("export_disk", "grubx64.efi"),
                         ("export_pxe", "grubnetx64.efi")):
        assert "shimx64.efi" in bodies[step] and loader in bodies[step], step

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))


def test_sam_template_passes_cfn_lint():
    result = subprocess.run([CFN_LINT, str(ROOT / "template.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_would_catch_a_broken_template(tmp_path):
    broken = (ROOT / "template.yaml").read_text().replace("MemorySize: !Ref MemorySize", "MemorySize: lots")
    (tmp_path / "template.yaml").write_text(broken)
    result = subprocess.run([CFN_LINT, str(tmp_path / "template.yaml")], capture_output=True, text=True)
    assert result.returncode != 0


def test_image_is_python_312_or_newer_and_builds_hnswlib_portably():
    dockerfile = (ROOT / "Dockerfile").read_text()
    versions = re.findall(r"^FROM public\.ecr\.aws/lambda/python:(\d+)\.(\d+)", dockerfile, re.M)
    assert versions and all((int(a), int(b)) >= (3, 12) for a, b in versions)
    assert "HNSWLIB_NO_NATIVE=1" in dockerfile
    assert 'CMD ["handler.lambda_function.handler"]' in dockerfile


def test_every_setting_the_template_passes_is_one_the_handler_reads():
    from handler.settings import Settings

    variables = set(re.findall(r"^\s+(TWOSTAGE_[A-Z0-9_]+):", (ROOT / "template.yaml").read_text(), re.M))
    assert "TWOSTAGE_RERANK_MAX_LENGTH" in variables
    assert {v.removeprefix("TWOSTAGE_").lower() for v in variables} <= set(Settings.model_fields)

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
    assert {v.removeprefix("TWOSTAGE_").lower() for v in variables} <= set(Settings.flat_fields())


# -- the template's variants, resolved as CloudFormation would for given parameters ---------------

NO_VALUE = object()


def rendered(**overrides) -> dict:
    """The template's resources with its conditions and the intrinsics it uses resolved for these parameters."""
    from cfnlint.decode.cfn_yaml import loads

    template = loads((ROOT / "template.yaml").read_text())
    params = {name: spec.get("Default") for name, spec in template["Parameters"].items()} | overrides
    for name, spec in template["Parameters"].items():  # CommaDelimitedList parameters resolve to lists
        if spec["Type"] == "CommaDelimitedList":
            params[name] = str(params[name]).split(",")
    conditions: dict[str, bool] = {}

    def resolve(node):
        if isinstance(node, dict) and len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref" and value == "AWS::NoValue":
                return NO_VALUE
            if key == "Ref" and value in params:
                return params[value]
            if key == "Fn::If":
                return resolve(value[1] if conditions[value[0]] else value[2])
            if key == "Fn::Equals":
                return str(resolve(value[0])) == str(resolve(value[1]))
            if key == "Fn::Not":
                return not resolve(value[0])
            if key == "Fn::Split":
                return str(resolve(value[1])).split(value[0])
            if key == "Fn::Join":
                items = resolve(value[1])
                return value[0].join(items if isinstance(items, list) else str(items).split(","))
        if isinstance(node, dict):
            items = {k: resolve(v) for k, v in node.items()}
            return {k: v for k, v in items.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (resolve(item) for item in node) if v is not NO_VALUE]
        return node

    for name, condition in template["Conditions"].items():
        conditions[name] = resolve(condition)
    resources = {}
    for name, resource in template["Resources"].items():
        if "Condition" not in resource or conditions[resource["Condition"]]:
            resources[name] = resolve(resource)
    return resources


def routes(resources: dict) -> dict[str, dict]:
    return {r["Properties"]["RouteKey"]: r["Properties"] for r in resources.values() if r["Type"].endswith("::Route")}


def test_default_deployment_is_iam_authenticated_throttled_and_capped():
    resources = rendered()
    assert routes(resources) and all(r["AuthorizationType"] == "AWS_IAM" for r in routes(resources).values())
    assert all("AuthorizerId" not in r for r in routes(resources).values())
    assert "JwtAuthorizer" not in resources
    stage = resources["SearchStage"]["Properties"]["DefaultRouteSettings"]
    assert (stage["ThrottlingRateLimit"], stage["ThrottlingBurstLimit"]) == (10, 20)
    assert resources["SearchFunction"]["Properties"]["ReservedConcurrentExecutions"] == 10
    assert "CorsConfiguration" not in resources["SearchApi"]["Properties"]


def test_jwt_variant_puts_every_route_behind_the_issuers_tokens():
    resources = rendered(Auth="jwt", JwtIssuer="https://issuer.example", JwtAudience="app1,app2")
    jwt = resources["JwtAuthorizer"]["Properties"]["JwtConfiguration"]
    assert jwt == {"Issuer": "https://issuer.example", "Audience": ["app1", "app2"]}
    for route in routes(resources).values():
        assert route["AuthorizationType"] == "JWT" and route["AuthorizerId"] == {"Ref": "JwtAuthorizer"}


def test_none_variant_is_public_and_says_so():
    resources = rendered(Auth="none")
    assert all(r["AuthorizationType"] == "NONE" for r in routes(resources).values())
    assert "PUBLIC" in (ROOT / "template.yaml").read_text()


def test_cors_and_concurrency_parameters():
    resources = rendered(CorsOrigins="https://a.example,https://b.example", ReservedConcurrency=0)
    assert resources["SearchApi"]["Properties"]["CorsConfiguration"]["AllowOrigins"] == [
        "https://a.example",
        "https://b.example",
    ]
    assert "ReservedConcurrentExecutions" not in resources["SearchFunction"]["Properties"]


def test_jwt_without_issuer_is_refused_by_a_rule():
    from cfnlint.decode.cfn_yaml import loads

    rules = loads((ROOT / "template.yaml").read_text())["Rules"]
    assertions = rules["JwtNeedsIssuerAndAudience"]["Assertions"]
    assert {a["AssertDescription"] for a in assertions} == {"Auth=jwt needs JwtIssuer.", "Auth=jwt needs JwtAudience."}


def test_the_api_routes_are_the_apps_routes(retriever, settings):
    from handler.api import create_app

    app = create_app(retriever, settings)
    served = {f"{method} {route.path}" for route in app.routes for method in route.methods if method != "HEAD"}
    assert set(routes(rendered())) == served - {"GET /docs"}  # /docs loads its script from a CDN: not routed


def test_gpu_image_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert dockerfile.rindex("USER") > dockerfile.rindex("COPY")  # the artifacts are read, not owned


def test_default_stage1_is_the_local_index_without_vpc_or_secrets():
    resources = rendered()
    function = resources["SearchFunction"]["Properties"]
    assert function["Environment"]["Variables"]["TWOSTAGE_STAGE1"] == "local"
    assert not {k for k in function["Environment"]["Variables"] if k.startswith("TWOSTAGE_QDRANT")}
    assert "VpcConfig" not in function and not {"ReadsQdrantSecret", "UsesVpc"} & set(resources)


def test_qdrant_variant_passes_the_cluster_reads_its_secret_and_runs_in_the_vpc():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qdrant-key"
    resources = rendered(
        Stage1="qdrant",
        QdrantUrl="https://q.example:6333",
        QdrantApiKeySecretArn=arn,
        VpcSubnetIds="subnet-1,subnet-2",
        VpcSecurityGroupIds="sg-1",
    )
    function = resources["SearchFunction"]["Properties"]
    env = function["Environment"]["Variables"]
    assert (env["TWOSTAGE_STAGE1"], env["TWOSTAGE_QDRANT_URL"]) == ("qdrant", "https://q.example:6333")
    assert env["TWOSTAGE_QDRANT_API_KEY_SECRET_ARN"] == arn and env["TWOSTAGE_QDRANT_COLLECTION"] == "twostage"
    assert function["VpcConfig"] == {"SubnetIds": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    statement = resources["ReadsQdrantSecret"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert (statement["Action"], statement["Resource"]) == ("secretsmanager:GetSecretValue", arn)
    assert "UsesVpc" in resources


def test_qdrant_without_url_is_refused_by_a_rule():
    from cfnlint.decode.cfn_yaml import loads

    rules = loads((ROOT / "template.yaml").read_text())["Rules"]
    assert rules["QdrantNeedsUrl"]["Assertions"][0]["AssertDescription"] == "Stage1=qdrant needs QdrantUrl."
    assert "VpcNeedsSecurityGroups" in rules


def test_the_qdrant_image_target_ships_no_local_index():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)
    qdrant = next(s for s in stages if re.match(r"\S+ AS qdrant", s))
    local = next(s for s in stages if re.match(r"\S+ AS local", s))
    assert "artifacts/index" not in qdrant and "EXTRAS=qdrant" in dockerfile
    assert "artifacts/index" in local and stages[-1] is local  # a plain `docker build` is the local image

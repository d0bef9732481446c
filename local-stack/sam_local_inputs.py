"""Writes what `sam local` needs to run the template's functions against the
running local stack (called by it: local-stack/src/sam.rs).

sam local gives a function only the environment variables its template
declares, each with the value --env-vars names for it
(samcli/local/lambdafn/env_vars.py). The local stack's functions read more than
the template declares (moto's endpoint, the JWKS URL, ...), and the deployed
values the template does declare (!Ref, !GetAtt) mean nothing here. So:

- target/sam-env.json, the --env-vars file: for every function of the
  template, the settings a container needs (the local stack's, with its
  endpoints on the docker bridge);
- .aws-sam/build/template.local.yaml, when `sam build` has run: the built
  template with each function declaring exactly those names, so that every one
  reaches the function and no deployed value does. Everything else (code,
  architecture, timeout, API events) is the built template's.

usage: python local-stack/sam_local_inputs.py SETTINGS_JSON
  SETTINGS_JSON: a JSON object of the settings a container needs.
"""

import json
import os
import sys

from samcli.yamlhelper import yaml_dump, yaml_parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "template.yaml")
BUILT = os.path.join(ROOT, ".aws-sam", "build", "template.yaml")
LOCAL = os.path.join(ROOT, ".aws-sam", "build", "template.local.yaml")
ENV_FILE = os.path.join(ROOT, "target", "sam-env.json")


def functions(template):
    return sorted(
        name
        for name, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::Serverless::Function"
    )


def main():
    with open(sys.argv[1]) as f:
        settings = json.load(f)
    if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
        sys.exit("settings must be a JSON object of strings")
    with open(SOURCE) as f:
        names = functions(yaml_parse(f.read()))
    if not names:
        sys.exit(f"no AWS::Serverless::Function in {SOURCE}")
    with open(ENV_FILE, "w") as f:
        json.dump({name: settings for name in names}, f, indent=2, sort_keys=True)
    written = [ENV_FILE]
    if os.path.exists(BUILT):
        with open(BUILT) as f:
            built = yaml_parse(f.read())
        if functions(built) != names:
            sys.exit(f"{BUILT} is not a build of {SOURCE}: run `sam build` again")
        for name in names:
            properties = built["Resources"][name].setdefault("Properties", {})
            properties["Environment"] = {"Variables": {key: "" for key in sorted(settings)}}
        with open(LOCAL, "w") as f:
            f.write(yaml_dump(built))
        written.append(LOCAL)
    print("\n".join(os.path.relpath(path, ROOT) for path in written))


if __name__ == "__main__":
    main()

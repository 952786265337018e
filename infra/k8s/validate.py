#!/usr/bin/env python3
"""Validates the Kubernetes manifests of infra/k8s offline.

    python3 infra/k8s/validate.py [--kubernetes-version 1.29.0 ...] [--rendered FILE] [DIR]

* Every resource that kustomization.yaml lists, and secret.example.yaml, is
  checked against the Kubernetes OpenAPI schemas bundled with the PyPI
  package kubernetes-validate (strict: unknown fields are errors), for each
  --kubernetes-version (default: 1.29.0 and the newest bundled).
* SpinApp and SpinAppExecutor resources are checked against the JSON schemas
  in schemas/, derived from the SpinKube operator's CRDs (plus the rules its
  admission webhook adds).
* Cross-references: Secret keys, ConfigMap generators, Service selectors and
  target ports, probe ports, the autoscaler's target, selectors of
  disruption budgets and network policies, the SpinApp's executor and its
  variables against spin.toml, and the baseline hardening of every pod.
* --rendered FILE (`kubectl kustomize infra/k8s > FILE`, `-` for stdin)
  checks the rendered output against the schemas as well.

Needs PyYAML, jsonschema and kubernetes-validate (`pip install`).

    python3 infra/k8s/validate.py --write-schemas spinapps-crd.yaml spinappexecutors-crd.yaml

regenerates schemas/ from the operator's CRD files
(config/crd/bases/core.spinkube.dev_*.yaml in spinkube/spin-operator).
"""

import argparse
import copy
import json
import os
import sys
import tomllib

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SPIN_KINDS = {"SpinApp": "spinapp.json", "SpinAppExecutor": "spinappexecutor.json"}
SPIN_API_VERSION = "core.spinkube.dev/v1alpha1"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


class Report:
    def __init__(self):
        self.errors = []
        self.checked = 0

    def error(self, where, message):
        self.errors.append(f"{where}: {message}")

    def ok(self):
        self.checked += 1


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def load_docs(path, report):
    try:
        with open(path) if path != "-" else sys.stdin as stream:
            docs = [d for d in yaml.safe_load_all(stream) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        report.error(path, f"cannot read: {error}")
        return []
    for doc in docs:
        doc["__file__"] = os.path.relpath(path, REPO) if path != "-" else "<rendered>"
    return docs


def strip(doc):
    return {k: v for k, v in doc.items() if k != "__file__"}


# --- schemas ---------------------------------------------------------------


def validate_core(doc, versions, report):
    import kubernetes_validate

    where = f"{doc['__file__']} {name_of(doc)}"
    for version in versions:
        try:
            kubernetes_validate.validate(strip(doc), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            report.error(where, f"Kubernetes {version}: {path}: {error.message}")
            return
        except kubernetes_validate.SchemaNotFoundError:
            report.error(where, f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")
            return
    report.ok()


def validate_spin(doc, report):
    where = f"{doc['__file__']} {name_of(doc)}"
    with open(os.path.join(HERE, "schemas", SPIN_KINDS[doc["kind"]])) as f:
        schema = json.load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(strip(doc)), key=lambda e: list(e.path))
    for error in errors:
        path = "/".join(str(p) for p in error.path) or "(root)"
        message = error.message
        if error.validator == "not" and doc["kind"] == "SpinApp":
            message = "replicas cannot be set when enableAutoscaling is true (the operator's webhook refuses it)"
        elif len(message) > 300:
            message = message[:300] + "..."
        report.error(where, f"{path}: {message}")
    if not errors:
        report.ok()


def validate_schemas(docs, versions, report):
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            report.error(doc.get("__file__", "?") if isinstance(doc, dict) else "?", "a document without kind/apiVersion")
            continue
        if doc["kind"] in SPIN_KINDS:
            if doc["apiVersion"] != SPIN_API_VERSION:
                report.error(f"{doc['__file__']} {name_of(doc)}", f"apiVersion must be {SPIN_API_VERSION}")
                continue
            validate_spin(doc, report)
        else:
            validate_core(doc, versions, report)


# --- cross-references ------------------------------------------------------


def pod_specs(doc):
    """(where, pod spec, pod labels) of a workload."""
    kind = doc.get("kind")
    if kind in WORKLOAD_KINDS:
        template = doc.get("spec", {}).get("template", {})
        return [(name_of(doc), template.get("spec", {}), template.get("metadata", {}).get("labels", {}))]
    return []


def selected_by(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(docs, secret_docs, kustomization, report):
    secrets = {}
    for doc in secret_docs:
        if doc.get("kind") == "Secret":
            data = dict(doc.get("stringData") or {})
            data.update(doc.get("data") or {})
            secrets[doc["metadata"]["name"]] = set(data)
    generated = {g["name"] for g in kustomization.get("configMapGenerator", [])}
    spinapps = [d for d in docs if d.get("kind") == "SpinApp"]
    executors = {d["metadata"]["name"] for d in docs if d.get("kind") == "SpinAppExecutor"}

    # Pods: their labels, and the named ports of their containers.
    pods = []
    for doc in docs:
        for where, spec, labels in pod_specs(doc):
            ports = {p.get("name"): p.get("containerPort") for c in spec.get("containers", []) for p in c.get("ports", [])}
            pods.append((where, labels, ports, spec))
    for app in spinapps:
        labels = {"core.spinkube.dev/app-name": app["metadata"]["name"]}
        labels.update(app["spec"].get("podLabels") or {})
        pods.append((name_of(app), labels, {"http": 80, None: 80}, None))

    def secret_ref(where, ref):
        name, key = ref.get("name"), ref.get("key")
        if name not in secrets:
            report.error(where, f"Secret {name!r} is not in secret.example.yaml")
        elif key is not None and key not in secrets[name]:
            report.error(where, f"Secret {name!r} has no key {key!r} in secret.example.yaml")
        else:
            report.ok()

    for where, labels, ports, spec in pods:
        if spec is None:
            continue
        pod_security = spec.get("securityContext", {})
        if pod_security.get("runAsNonRoot") is not True:
            report.error(where, "pod securityContext.runAsNonRoot must be true")
        if pod_security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            report.error(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            report.error(where, "automountServiceAccountToken must be false (no pod here talks to the API server)")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in generated:
                report.error(where, f"ConfigMap {volume['configMap']['name']!r} is not generated by kustomization.yaml")
            if "secret" in volume:
                secret_ref(where, {"name": volume["secret"]["secretName"]})
                for item in volume["secret"].get("items", []):
                    secret_ref(where, {"name": volume["secret"]["secretName"], "key": item["key"]})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            cwhere = f"{where} container {container['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret_ref(cwhere, ref)
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes and not any(
                        t["metadata"]["name"] == mount["name"]
                        for d in docs if d.get("kind") == "StatefulSet" and name_of(d) == where
                        for t in d["spec"].get("volumeClaimTemplates", [])):
                    report.error(cwhere, f"volume {mount['name']!r} is not defined")
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                report.error(cwhere, "securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                report.error(cwhere, "securityContext.capabilities.drop must contain ALL")
            if "memory" not in container.get("resources", {}).get("limits", {}):
                report.error(cwhere, "resources.limits.memory is missing")
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name) or {}
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    report.error(cwhere, f"{probe_name} uses port {port!r}, which no container names")
            if container in spec.get("containers", []) and not (container.get("readinessProbe") or container.get("livenessProbe")) \
                    and not any(d.get("kind") == "Job" and name_of(d) == where for d in docs):
                report.error(cwhere, "no readiness or liveness probe")
        report.ok()

    # Services select pods and name their ports.
    services = {}
    for doc in docs:
        if doc.get("kind") != "Service":
            continue
        where = f"{doc['__file__']} {name_of(doc)}"
        services[doc["metadata"]["name"]] = doc
        selector = doc["spec"].get("selector", {})
        matched = [p for p in pods if selected_by(selector, p[1])]
        if not matched:
            report.error(where, f"selector {selector} matches no pod")
            continue
        for port in doc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if isinstance(target, str) and not all(target in p[2] for p in matched):
                report.error(where, f"targetPort {target!r} is not a port name of {', '.join(p[0] for p in matched)}")
        report.ok()

    for doc in docs:
        where = f"{doc['__file__']} {name_of(doc)}"
        kind = doc.get("kind")
        if kind == "StatefulSet":
            service = services.get(doc["spec"].get("serviceName"))
            if service is None or service["spec"].get("clusterIP") != "None":
                report.error(where, f"serviceName {doc['spec'].get('serviceName')!r} is not a headless Service here")
            else:
                report.ok()
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = (doc["spec"].get("selector") or doc["spec"].get("podSelector") or {}).get("matchLabels")
            if selector is None:
                continue  # podSelector {}: every pod
            if not any(selected_by(selector, p[1]) for p in pods):
                report.error(where, f"selector {selector} matches no pod")
            else:
                report.ok()
            for rule in doc["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    peer_selector = peer.get("podSelector", {}).get("matchLabels")
                    if peer_selector and not any(selected_by(peer_selector, p[1]) for p in pods):
                        report.error(where, f"ingress peer {peer_selector} matches no pod")
        elif kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            apps = {a["metadata"]["name"]: a for a in spinapps}
            deployments = {d["metadata"]["name"] for d in docs if d.get("kind") == "Deployment"}
            if target.get("kind") != "Deployment" or target.get("apiVersion") != "apps/v1":
                report.error(where, "scaleTargetRef must be an apps/v1 Deployment")
            elif target["name"] in apps:
                app = apps[target["name"]]
                if app["spec"].get("enableAutoscaling") is not True:
                    report.error(where, f"SpinApp {target['name']!r} must set enableAutoscaling: true for an autoscaler")
                elif not app["spec"].get("resources", {}).get("requests", {}).get("cpu"):
                    report.error(where, f"SpinApp {target['name']!r} needs a CPU request for CPU utilisation")
                else:
                    report.ok()
            elif target["name"] not in deployments:
                report.error(where, f"scaleTargetRef {target['name']!r} is neither a SpinApp nor a Deployment here")
            else:
                report.ok()

    # The SpinApp: its executor, and its variables against spin.toml.
    with open(os.path.join(REPO, "spin.toml"), "rb") as f:
        manifest_variables = tomllib.load(f).get("variables", {})
    for app in spinapps:
        where = f"{app['__file__']} {name_of(app)}"
        spec = app["spec"]
        if spec.get("executor") not in executors:
            report.error(where, f"executor {spec.get('executor')!r} is not a SpinAppExecutor of these manifests")
        given = {}
        for variable in spec.get("variables", []):
            given[variable["name"]] = variable
            if variable["name"] not in manifest_variables:
                report.error(where, f"variable {variable['name']!r} is not declared in spin.toml")
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secret_ref(where, ref)
            if manifest_variables.get(variable["name"], {}).get("secret") and "value" in variable:
                report.error(where, f"variable {variable['name']!r} is secret in spin.toml: take it from a Secret")
        for name, declaration in manifest_variables.items():
            if declaration.get("required") and name not in given:
                report.error(where, f"spin.toml requires variable {name!r}")
        url = given.get("sidecar_url", {}).get("value", "")
        host_port = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = host_port.partition(":")
        service = services.get(host.split(".")[0])
        if service is None or not any(str(p["port"]) == port for p in service["spec"]["ports"]):
            report.error(where, f"sidecar_url {url!r} is not a Service and port of these manifests")
        report.ok()


# --- kustomization ---------------------------------------------------------


def load_kustomization(directory, report):
    path = os.path.join(directory, "kustomization.yaml")
    with open(path) as f:
        kustomization = yaml.safe_load(f)
    for resource in kustomization.get("resources", []):
        if not os.path.isfile(os.path.join(directory, resource)):
            report.error("kustomization.yaml", f"resource {resource!r} does not exist")
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            if not os.path.isfile(os.path.join(directory, source)):
                report.error("kustomization.yaml", f"generator file {source!r} does not exist")
    for configuration in kustomization.get("configurations", []):
        if not os.path.isfile(os.path.join(directory, configuration)):
            report.error("kustomization.yaml", f"configuration {configuration!r} does not exist")
    return kustomization


# --- schemas from the CRDs ---------------------------------------------------


def tighten(schema):
    """OpenAPI v3 schema of a CRD -> JSON schema: no descriptions, unknown
    fields rejected (as `kubectl apply --validate=strict` does)."""
    if isinstance(schema, dict):
        out = {k: tighten(v) for k, v in schema.items() if k != "description"}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [tighten(item) for item in schema]
    return schema


def write_schemas(crd_files):
    for path in crd_files:
        with open(path) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        group = crd["spec"]["group"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        schema = tighten(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
        schema["properties"]["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}},
        }
        if kind == "SpinApp":
            # iSCSI volumes are left to Kubernetes' own validation.
            volume = schema["properties"]["spec"]["properties"]["volumes"]["items"]["properties"]
            volume["iscsi"] = {"type": "object"}
            # The operator's admission webhook: replicas only without
            # autoscaling (and then at least 1), an executor always.
            schema["properties"]["spec"]["allOf"] = [{
                "if": {"properties": {"enableAutoscaling": {"const": True}}, "required": ["enableAutoscaling"]},
                "then": {"not": {"required": ["replicas"]}},
                "else": {"required": ["replicas"], "properties": {"replicas": {"minimum": 1}}},
            }]
            schema["properties"]["spec"]["properties"]["executor"]["minLength"] = 1
        out = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": (f"{kind} {group}/{version['name']}, from the openAPIV3Schema of the SpinKube operator's CRD "
                         f"({os.path.basename(path)}, controller-gen "
                         f"{crd['metadata'].get('annotations', {}).get('controller-gen.kubebuilder.io/version', '?')}); "
                         "descriptions dropped, unknown fields rejected, the admission webhook's rules added. "
                         "Regenerate with: python3 infra/k8s/validate.py --write-schemas CRD.yaml"),
            "title": kind,
        }
        out.update(schema)
        target = os.path.join(HERE, "schemas", SPIN_KINDS[kind])
        with open(target, "w") as f:
            json.dump(out, f, indent=1, sort_keys=False)
            f.write("\n")
        print(f"wrote {os.path.relpath(target, REPO)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", default=HERE)
    parser.add_argument("--kubernetes-version", action="append", dest="versions")
    parser.add_argument("--rendered", help="output of `kubectl kustomize` to check as well ('-' for stdin)")
    parser.add_argument("--write-schemas", nargs="+", metavar="CRD", help="regenerate schemas/ from CRD files")
    args = parser.parse_args()
    if args.write_schemas:
        write_schemas(args.write_schemas)
        return 0

    import kubernetes_validate

    versions = args.versions or ["1.29.0", kubernetes_validate.latest_version()]
    report = Report()
    kustomization = load_kustomization(args.directory, report)
    docs = []
    for resource in kustomization.get("resources", []):
        docs.extend(load_docs(os.path.join(args.directory, resource), report))
    secret_docs = load_docs(os.path.join(args.directory, "secret.example.yaml"), report)
    validate_schemas(docs + secret_docs, versions, report)
    check_references(docs, secret_docs, kustomization, report)
    if args.rendered:
        rendered = load_docs(args.rendered, report)
        if not rendered:
            report.error("<rendered>", "no resources")
        validate_schemas(rendered, versions, report)

    kinds = sorted({d.get("kind", "?") for d in docs})
    if report.errors:
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(report.errors)} problem(s) in infra/k8s", file=sys.stderr)
        return 1
    print(f"infra/k8s: {len(docs)} resources ({', '.join(kinds)}) and the Secret example valid "
          f"for Kubernetes {', '.join(versions)}; {report.checked} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

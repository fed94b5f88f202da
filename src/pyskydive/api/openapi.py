"""The OpenAPI 3 description of the REST API, and a small interactive docs page.

Served at ``/api/openapi.json`` and ``/api/docs``. The page needs nothing from the internet
(operators run analyzers on closed networks): it reads the description and offers a form per
operation that sends the request with the browser's credentials and shows the answer.
"""

from __future__ import annotations

from typing import Any

from pyskydive import __version__

__all__ = ["DOCS_HTML", "openapi_spec"]

_STR: dict[str, Any] = {"type": "string"}
_INT = {"type": "integer", "format": "int64"}
_OBJ = {"type": "object", "additionalProperties": True}

_ELEMENT: dict[str, Any] = {
    "type": "object",
    "required": ["ID", "Metadata"],
    "properties": {
        "ID": _STR,
        "Metadata": _OBJ,
        "Host": _STR,
        "Origin": _STR,
        "CreatedAt": _INT,
        "UpdatedAt": _INT,
        "DeletedAt": _INT,
        "Revision": _INT,
    },
}

_RESOURCES: dict[str, dict[str, Any]] = {
    "capture": {
        "required": ["GremlinQuery"],
        "properties": {
            k: _STR
            for k in [
                "UUID",
                "GremlinQuery",
                "BPFFilter",
                "Name",
                "Description",
                "Type",
                "LayerKeyMode",
                "Target",
                "TargetType",
            ]
        }
        | {
            k: _INT
            for k in [
                "Count",
                "Port",
                "SamplingRate",
                "PollingInterval",
                "RawPacketLimit",
                "HeaderSize",
            ]
        }
        | {k: {"type": "boolean"} for k in ["ExtraTCPMetric", "IPDefrag", "ReassembleTCP"]},
    },
    "alert": {
        "required": ["Expression"],
        "properties": {
            k: _STR for k in ["UUID", "Name", "Description", "Expression", "Action", "Trigger"]
        }
        | {"CreateTime": _INT},
    },
    "noderule": {
        "required": ["Action", "Metadata"],
        "properties": {k: _STR for k in ["UUID", "Name", "Description", "Action", "Query"]}
        | {"Metadata": _OBJ},
    },
    "edgerule": {
        "required": ["Src", "Dst", "Metadata"],
        "properties": {k: _STR for k in ["UUID", "Name", "Description", "Src", "Dst"]}
        | {"Metadata": _OBJ},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Bad request: the reason names the field or query position"),
    "401": _json(_ref("Error"), "No or wrong credentials"),
    "404": _json(_ref("Error"), "No such resource"),
}


def _crud(kind: str, schema: str) -> dict[str, Any]:
    item = _ref(schema)
    collection = {
        "get": {
            "summary": f"List {kind}s (an object map keyed by ID)",
            "tags": [kind],
            "responses": {
                "200": _json({"type": "object", "additionalProperties": item}, "All of them")
            }
            | _ERRORS,
        },
        "post": {
            "summary": f"Create a {kind}",
            "tags": [kind],
            "requestBody": {"required": True, "content": {"application/json": {"schema": item}}},
            "responses": {"201": _json(item, "Created, with its ID filled in")}
            | ({"409": _json(_ref("Error"), "Duplicate")} if kind == "capture" else {})
            | _ERRORS,
        },
    }
    one = {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STR}],
        "get": {
            "summary": f"Get one {kind}",
            "tags": [kind],
            "responses": {"200": _json(item, "Found")} | _ERRORS,
        },
        "patch": {
            "summary": f"Change a {kind} with an RFC 6902 JSON Patch",
            "tags": [kind],
            "requestBody": {
                "required": True,
                "content": {"application/json-patch+json": {"schema": {"type": "array"}}},
            },
            "responses": {
                "200": _json(item, "Changed"),
                "304": {"description": "The patch changed nothing"},
            }
            | _ERRORS,
        },
        "delete": {
            "summary": f"Delete a {kind}",
            "tags": [kind],
            "responses": {"200": {"description": "Deleted"}} | _ERRORS,
        },
    }
    return {f"/api/{kind}": collection, f"/api/{kind}/{{id}}": one}


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of this analyzer's REST API."""
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "properties": {"Error": _STR}},
        "Node": _ELEMENT,
        "Edge": {
            **_ELEMENT,
            "required": ["ID", "Metadata", "Parent", "Child"],
            "properties": {**_ELEMENT["properties"], "Parent": _STR, "Child": _STR},
        },
        "Graph": {
            "type": "object",
            "properties": {
                "Nodes": {"type": "array", "items": _ref("Node")},
                "Edges": {"type": "array", "items": _ref("Edge")},
            },
        },
    }
    for kind, spec in _RESOURCES.items():
        schemas[kind.capitalize()] = {"type": "object", **spec}
    paths: dict[str, Any] = {
        "/api": {
            "get": {
                "summary": "Who answers: Host, Version, Service",
                "tags": ["service"],
                "responses": {"200": _json(_OBJ, "Service identity")},
            }
        },
        "/api/status": {
            "get": {
                "summary": "Connected agents, subscribers and publishers",
                "tags": ["service"],
                "responses": {"200": _json(_OBJ, "Status")} | _ERRORS,
            }
        },
        "/api/topology": {
            "get": {
                "summary": "The whole live graph",
                "tags": ["topology"],
                "responses": {"200": _json(_ref("Graph"), "Nodes and edges")} | _ERRORS,
            },
            "post": {
                "summary": "Run a Gremlin query (Accept: text/vnd.graphviz for DOT)",
                "tags": ["topology"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["GremlinQuery"],
                                "properties": {"GremlinQuery": _STR},
                            },
                            "example": {"GremlinQuery": "G.V().Has('Type', 'netns')"},
                        }
                    },
                },
                "responses": {"200": _json({}, "The query's result")} | _ERRORS,
            },
        },
        "/api/pcap": {  # flows (issue 5)
            "post": {
                "summary": "Build flows from an uploaded pcap file (the packets' own timestamps)",
                "tags": ["flows"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/vnd.tcpdump.pcap": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "Packets": _INT,
                                "Flows": _INT,
                                "DecodeErrors": _INT,
                                "CaptureID": _STR,
                            },
                        },
                        "Summary of the flows built",
                    )
                }
                | _ERRORS,
            }
        },
        "/login": {
            "post": {
                "summary": "Log in; sets the authtoken cookie and returns the token",
                "tags": ["auth"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {"username": _STR, "password": _STR},
                            }
                        }
                    },
                },
                "responses": {"200": _json(_OBJ, "Logged in")} | _ERRORS,
            }
        },
    }
    for kind, schema in (
        ("capture", "Capture"),
        ("alert", "Alert"),
        ("noderule", "Noderule"),
        ("edgerule", "Edgerule"),
        ("node", "Node"),
        ("edge", "Edge"),
    ):
        paths.update(_crud(kind, schema))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Skydive analyzer API",
            "version": __version__,
            "description": (
                "REST API of the Skydive analyzer, wire-compatible with Skydive v0.28. "
                "WebSocket endpoints (not described by OpenAPI): /ws/subscriber (also "
                "/ws/graph and /ws) for the graph event stream, /ws/publisher and /ws/pubsub "
                "for external tools, /ws/agent/topology for agents."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "authtoken"},
            },
        },
        "security": [{}, {"basic": []}, {"token": []}, {"cookie": []}],
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Skydive API</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}
h1{font-size:1.4em} details{border:1px solid #ccc;border-radius:4px;margin:.4em 0;padding:.3em .6em}
summary{cursor:pointer} .m{display:inline-block;width:4.5em;font-weight:bold}
.get{color:#1b6} .post{color:#26c} .patch{color:#a60} .delete{color:#c22}
textarea,input{font:13px monospace;width:100%;box-sizing:border-box}
pre{background:#f4f4f4;padding:.5em;overflow:auto;max-height:30em}
</style></head><body>
<h1>Skydive analyzer API <small id="version"></small></h1>
<p id="description"></p>
<div id="ops"></div>
<script>
async function main() {
  const spec = await (await fetch('openapi.json')).json();
  document.getElementById('version').textContent = spec.info.version;
  document.getElementById('description').textContent = spec.info.description;
  const ops = document.getElementById('ops');
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const method of ['get', 'post', 'patch', 'delete']) {
      const op = item[method]; if (!op) continue;
      const d = document.createElement('details');
      const s = document.createElement('summary');
      s.innerHTML = `<span class="m ${method}">${method.toUpperCase()}</span> <code></code> `;
      s.querySelector('code').textContent = path;
      s.append(op.summary || '');
      d.append(s);
      const needsId = path.includes('{id}');
      const idInput = document.createElement('input');
      if (needsId) {
        const label = document.createElement('label');
        label.textContent = 'id ';
        label.append(idInput);
        d.append(label);
      }
      let body = null;
      if (op.requestBody) {
        body = document.createElement('textarea'); body.rows = 6;
        const content = op.requestBody.content;
        const ex = content['application/json'] && content['application/json'].example;
        body.value = ex ? JSON.stringify(ex, null, 2) : (method === 'patch' ? '[]' : '{}');
        if (content['application/x-www-form-urlencoded']) body.value = 'username=&password=';
        d.append(body);
      }
      const button = document.createElement('button'); button.textContent = 'Send';
      const out = document.createElement('pre');
      button.onclick = async () => {
        const url = path.replace('{id}', encodeURIComponent(idInput.value));
        const init = {method: method.toUpperCase(), credentials: 'same-origin', headers: {}};
        if (body) {
          const form = op.requestBody.content['application/x-www-form-urlencoded'];
          init.headers['Content-Type'] = form ? 'application/x-www-form-urlencoded'
            : (method === 'patch' ? 'application/json-patch+json' : 'application/json');
          init.body = body.value;
        }
        try {
          const r = await fetch(url, init);
          const text = await r.text();
          let shown = text; try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {}
          out.textContent = `${r.status} ${r.statusText}\\n${shown}`;
        } catch (e) { out.textContent = String(e); }
      };
      d.append(button, out);
      ops.append(d);
    }
  }
}
main();
</script></body></html>
"""

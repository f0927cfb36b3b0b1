"""One ModelGroup per provider adapter, each pointing at fake-provider speaking that provider's native
wire format, and what each provider can do. conftest.py adds these groups to the session config;
test_providers.py runs the same SDK scenarios through every one of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERTEX_SERVICE_ACCOUNT = REPO / "tests/fixtures/google-auth/test-service-account.json"
# The fake verifies SigV4 signatures made with this test key pair.
AWS_ACCESS_KEY_ID = "AKIDFAKEBEDROCK"
AWS_SECRET_ACCESS_KEY = "fake-bedrock-secret"


@dataclass(frozen=True)
class Provider:
    name: str  # the test id, and the client-facing model `p-<name>`
    kind: str  # ModelGroup `provider`
    dialect: str  # what fake-provider records it answered in
    model: str  # upstream model id
    base_path: str = ""  # appended to the fake's URL to form `baseUrl`
    settings: str = ""  # extra deployment YAML (one line each, indented by the template)
    credentials: str = "{secretKeyRef: {name: sdk-keys, key: upstream}}"
    embed_model: str | None = None  # upstream embedding model, when the provider has embeddings
    embed_batch: int = 2  # inputs one embeddings request may carry
    images: bool = True  # image inputs at all
    image_urls: bool = True  # http(s) image URLs (besides base64 data URLs)
    json_schema: bool = True  # response_format json_schema (json_object works everywhere)

    @property
    def chat(self) -> str:
        return f"p-{self.name}"

    @property
    def embed(self) -> str:
        return f"pe-{self.name}"


PROVIDERS = [
    Provider("anthropic", "anthropic", "anthropic", "claude-sonnet-4-5"),
    # The Gemini API fetches no image URLs (only Vertex does): a 400.
    Provider("gemini", "gemini", "gemini", "gemini-2.5-flash", embed_model="gemini-embedding-001", image_urls=False),
    Provider(
        "vertex",
        "vertex",
        "gemini",
        "gemini-2.5-flash",
        settings="project: sdk-project\nregion: us-central1",
        credentials="{secretKeyRef: {name: sdk-keys, key: vertex-service-account}}",
        embed_model="text-embedding-005",
    ),
    Provider(
        "vertex-claude",
        "vertex",
        "anthropic",
        "claude-sonnet-4-5@20250929",
        settings="project: sdk-project\nregion: us-east5",
        credentials="{secretKeyRef: {name: sdk-keys, key: vertex-service-account}}",
    ),
    Provider(
        "bedrock",
        "bedrock",
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        settings="region: us-east-1",
        credentials=(
            "{aws: {accessKeyIdRef: {name: sdk-keys, key: aws-id}, "
            "secretAccessKeyRef: {name: sdk-keys, key: aws-secret}}}"
        ),
        embed_model="cohere.embed-english-v3",
        image_urls=False,
    ),
    Provider(
        "bedrock-api-key",
        "bedrock",
        "bedrock",
        "amazon.nova-pro-v1:0",
        settings="region: us-west-2",
        # Amazon Titan embeds one text per call: the gateway splits the request and joins the answers.
        embed_model="amazon.titan-embed-text-v2:0",
        image_urls=False,
    ),
    Provider("azure", "azure", "azure", "gpt-4o-prod", embed_model="text-embedding-3-small-prod"),
    Provider("cohere", "cohere", "cohere", "command-a-03-2025", embed_model="embed-v4.0"),
    Provider("mistral", "mistral", "mistral", "mistral-large-latest", base_path="/mistral/v1", embed_model="mistral-embed"),
    Provider(
        "deepseek", "deepseek", "deepseek", "deepseek-chat", base_path="/deepseek", json_schema=False, images=False
    ),
]


def _deployment(provider: Provider, model: str, fake_url: str) -> str:
    lines = [
        f"    - name: {provider.name}",
        f"      provider: {provider.kind}",
        f"      model: {json.dumps(model)}",
        f"      baseUrl: {fake_url}{provider.base_path}",
        f"      credentials: {provider.credentials}",
    ]
    lines += [f"      {line}" for line in provider.settings.splitlines()]
    return "\n".join(lines)


def model_groups(fake_url: str) -> str:
    """The YAML documents of every provider's chat (and embeddings) group, plus the fallback chain
    anthropic -> gemini -> bedrock."""
    docs = []
    for provider in PROVIDERS:
        docs.append(
            f"""---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: {provider.chat}}}
spec:
  models: [{provider.chat}]
  tags: [function-calling, vision]
  deployments:
{_deployment(provider, provider.model, fake_url)}
"""
        )
        if provider.embed_model:
            docs.append(
                f"""---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {{name: {provider.embed}}}
spec:
  models: [{provider.embed}]
  deployments:
{_deployment(provider, provider.embed_model, fake_url)}
"""
            )
    docs.append(
        """---
apiVersion: modelgate.io/v1alpha1
kind: ModelGroup
metadata: {name: chain}
spec:
  models: [chain]
  tags: [function-calling]
  fallbacks: [p-gemini, p-bedrock]
  deployments:
""" + _deployment(PROVIDERS[0], PROVIDERS[0].model, fake_url) + "\n"
    )
    return "".join(docs)


def secret_entries(fake_url: str) -> str:
    """Secret stringData lines: the AWS test keys and a Vertex service-account key whose token_uri
    is the fake's token endpoint."""
    account = json.loads(VERTEX_SERVICE_ACCOUNT.read_text())
    account["token_uri"] = f"{fake_url}/token"
    return "\n".join(
        [
            f"  aws-id: {AWS_ACCESS_KEY_ID}",
            f"  aws-secret: {AWS_SECRET_ACCESS_KEY}",
            # A JSON string literal is a valid YAML double-quoted scalar.
            f"  vertex-service-account: {json.dumps(json.dumps(account))}",
        ]
    )

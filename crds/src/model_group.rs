//! `ModelGroup`: the model names clients send, and the provider deployments that serve them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Credentials, Pricing, Strategy, Timeouts};

/// A set of interchangeable provider deployments behind one or more public model names.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "modelgate.io",
    version = "v1alpha1",
    kind = "ModelGroup",
    namespaced,
    status = "ModelGroupStatus",
    shortname = "mg",
    category = "modelgate",
    printcolumn = r#"{"name":"Models","type":"string","jsonPath":".spec.models"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Deployments","type":"integer","jsonPath":".status.deployments"}"#,
    printcolumn = r#"{"name":"Tags","type":"string","jsonPath":".status.tags"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Served","type":"string","jsonPath":".status.served"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!has(self.spec.fallbacks) || !self.spec.fallbacks.exists(f, f == self.metadata.name)").message("a ModelGroup cannot fall back to itself")
)]
#[x_kube(validation = Rule::new("self.deployments.all(d, self.deployments.exists_one(e, e.name == d.name))").message("deployment names must be unique within a ModelGroup"))]
#[serde(rename_all = "camelCase")]
pub struct ModelGroupSpec {
    /// Model names clients send in the `model` field (aliases included), e.g. `gpt-4o-mini`.
    /// A name may belong to one ModelGroup per namespace.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 128)))]
    pub models: Vec<String>,
    /// Capabilities every deployment of the group has: vision, code, long-context,
    /// function-calling, multilingual, embeddings, images, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub tags: Vec<String>,
    /// The provider deployments that can serve the group's models.
    #[schemars(length(min = 1, max = 64))]
    pub deployments: Vec<Deployment>,
    /// Other ModelGroups (same namespace) tried in order when every deployment of this one failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 253)))]
    pub fallbacks: Vec<String>,
    /// Pins the routing strategy for this group, overriding the caller's RoutingPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Groups (same namespace) with larger context windows, tried in order when a provider
    /// answers that the request is too long for this group's models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 253)))]
    pub context_window_fallbacks: Vec<String>,
    /// Quality rank used by `auto` in quality-first mode: higher is better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub quality: Option<u32>,
    /// Output tokens assumed for cost estimates when a request sets no `max_tokens` (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub default_max_tokens: Option<u32>,
}

/// One upstream model at one provider.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!(self.provider in ['openai-compatible', 'azure']) || has(self.baseUrl)").message("baseUrl is required for openai-compatible and azure deployments"))]
#[x_kube(validation = Rule::new("self.provider != 'mock' || !has(self.credentials)").message("mock deployments take no credentials"))]
#[x_kube(validation = Rule::new("self.provider != 'bedrock' || has(self.region)").message("bedrock deployments need a region"))]
#[x_kube(validation = Rule::new("self.provider != 'vertex' || (has(self.region) && has(self.project))").message("vertex deployments need a project and a region"))]
#[x_kube(validation = Rule::new("!has(self.credentials) || !has(self.credentials.aws) || self.provider == 'bedrock'").message("aws credentials are for bedrock deployments only"))]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Name of the deployment, unique within the group; it appears in headers, logs and metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which provider API the deployment speaks.
    pub provider: ProviderKind,
    /// The upstream model id sent to the provider, e.g. `gpt-4o-mini-2024-07-18`.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Base URL of the provider API, e.g. `https://api.openai.com/v1`. Only http and https.
    /// Required for openai-compatible and azure; the other providers default to their public API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("baseUrl must be an http or https URL"))]
    #[schemars(length(max = 2048))]
    pub base_url: Option<String>,
    /// The provider credential, as a reference to Secret keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
    /// The cloud region: the AWS region of a `bedrock` deployment (e.g. `us-east-1`), the
    /// location of a `vertex` one (e.g. `us-central1`, or `global`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// The Google Cloud project of a `vertex` deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9-]+$"))]
    pub project: Option<String>,
    /// The `api-version` of an `azure` deployment (default `2024-10-21`); `v1` selects Azure's
    /// v1 API, where `model` is the deployment name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9.-]+$"))]
    pub api_version: Option<String>,
    /// Relative share of traffic under simple-shuffle (default 1; 0 takes it out of rotation
    /// while keeping it as a fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: Option<u32>,
    /// Requests per minute the provider allows this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rpm: Option<u64>,
    /// Tokens per minute the provider allows this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tpm: Option<u64>,
    /// Capabilities this deployment has beyond the group's tags. When empty, the deployment
    /// takes its model's capabilities from the catalog (vision, function-calling, json-mode,
    /// structured-output, reasoning, embeddings, images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub tags: Vec<String>,
    /// Tokens of prompt and answer together the model accepts; overrides the catalog's. A
    /// request estimated to need more never goes to this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u64>,
    /// Prices used for cost accounting and cost-based routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Per-deployment timeouts; they override the RoutingPolicy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Settings of the built-in mock provider (provider: mock only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockSettings>,
}

/// The provider APIs a deployment can speak.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// OpenAI's own API.
    Openai,
    /// Any server speaking the OpenAI API (vLLM, Ollama, LM Studio, ...); needs baseUrl.
    OpenaiCompatible,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// Google Vertex AI.
    Vertex,
    /// AWS Bedrock Converse API.
    Bedrock,
    /// Azure OpenAI; needs baseUrl.
    Azure,
    /// Cohere v2 API.
    Cohere,
    /// Mistral API.
    Mistral,
    /// DeepSeek API.
    Deepseek,
    /// Built-in deterministic provider, no network: for demos and tests.
    Mock,
}

impl ProviderKind {
    /// The name used in manifests, headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::OpenaiCompatible => "openai-compatible",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Vertex => "vertex",
            Self::Bedrock => "bedrock",
            Self::Azure => "azure",
            Self::Cohere => "cohere",
            Self::Mistral => "mistral",
            Self::Deepseek => "deepseek",
            Self::Mock => "mock",
        }
    }

    /// `gen_ai.provider.name` in OpenTelemetry's GenAI semantic conventions (their well-known
    /// values where one exists).
    pub fn semconv_name(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::OpenaiCompatible => "openai_compatible",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gcp.gemini",
            Self::Vertex => "gcp.vertex_ai",
            Self::Bedrock => "aws.bedrock",
            Self::Azure => "azure.ai.openai",
            Self::Cohere => "cohere",
            Self::Mistral => "mistral_ai",
            Self::Deepseek => "deepseek",
            Self::Mock => "modelgate.mock",
        }
    }

    /// The API hosts this provider's credentials go to when no `baseUrl` says otherwise: a
    /// credential may always be sent there. `*` stands for one DNS label.
    pub fn own_hosts(self, region: Option<&str>) -> Vec<String> {
        let fixed: &[&str] = match self {
            Self::Openai => &["api.openai.com"],
            Self::Anthropic => &["api.anthropic.com"],
            Self::Gemini => &["generativelanguage.googleapis.com"],
            Self::Vertex => &["aiplatform.googleapis.com", "*-aiplatform.googleapis.com"],
            Self::Azure => &[
                "*.openai.azure.com",
                "*.cognitiveservices.azure.com",
                "*.services.ai.azure.com",
            ],
            Self::Cohere => &["api.cohere.com", "api.cohere.ai"],
            Self::Mistral => &["api.mistral.ai"],
            Self::Deepseek => &["api.deepseek.com"],
            Self::Bedrock | Self::OpenaiCompatible | Self::Mock => &[],
        };
        let mut hosts: Vec<String> = fixed.iter().map(|h| (*h).to_owned()).collect();
        if let (Self::Bedrock, Some(region)) = (self, region) {
            hosts.push(format!("bedrock-runtime.{region}.amazonaws.com"));
            hosts.push(format!("bedrock-runtime-fips.{region}.amazonaws.com"));
        }
        hosts
    }
}

/// Behaviour of the built-in mock provider.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MockSettings {
    /// Delay before the mock answers (and between streamed chunks), e.g. `20ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<crate::common::DurationString>,
    /// Length of the embedding vectors it returns when the request gives no `dimensions` (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub embedding_dimensions: Option<u32>,
}

/// What the operator last observed about a ModelGroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelGroupStatus {
    /// Accepted, ResolvedRefs and Ready, with reasons a person can act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of deployments in the published config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployments: Option<i32>,
    /// The capability tags the group can serve (its deployments' effective tags), sorted and
    /// comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Each deployment's effective tags, context window and price, as routing sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployment_details: Vec<DeploymentStatus>,
    /// Checksum of the published config that includes this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_checksum: Option<String>,
    /// Data planes serving the published config / data planes alive (their heartbeats), e.g.
    /// `3/3`: whether a change reached traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<String>,
}

/// One deployment as routing sees it: the tags it serves (the group's and its own, else its
/// model's catalog capabilities), its context window and where its price comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `declared` (the deployment's `tags`) or `catalog` (its model's capabilities).
    pub tags_from: String,
    /// Tokens of prompt and answer together (declared, else the catalog's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// `deployment` (its `pricing`), `catalog <provider/model>` (the list price it is costed
    /// at), or absent (unpriced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
}

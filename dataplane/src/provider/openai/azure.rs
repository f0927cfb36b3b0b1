//! Azure OpenAI: deployment-scoped URLs with a dated `api-version` (or the `v1` API), and the
//! stream's opening prompt-filter chunk taken out. Bodies are OpenAI's, content-filter
//! annotations (`prompt_filter_results`, `content_filter_results`) pass through as extension
//! members.

use modelgate_crds::compiled::CompiledDeployment;
use serde::Deserialize;

use super::super::{
    CallError, Endpoint,
    done_watch::is_last_line,
    translated::{StreamTranslator, cut_short},
};

/// The Azure OpenAI GA version used when a deployment names none.
const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The upstream URL of `endpoint` at `deployment`: the v1 API when its `apiVersion` is `v1`
/// (the deployment goes in the body's `model`), the classic deployment path otherwise.
pub fn url(deployment: &CompiledDeployment, endpoint: Endpoint) -> String {
    let base = super::base_url(deployment.base_url.as_deref(), "");
    match deployment.api_version.as_deref() {
        Some("v1") => format!("{base}/openai/v1{}", endpoint.openai_path()),
        version => format!(
            "{base}/openai/deployments/{}{}?api-version={}",
            deployment.model,
            endpoint.openai_path(),
            version.unwrap_or(DEFAULT_API_VERSION)
        ),
    }
}

/// Takes Azure's opening prompt-filter chunk (`choices: []`, empty `id`) out of a stream: strict
/// OpenAI clients read `choices[0]` of every chunk.
/// The stream also has to end with `[DONE]`: one that closes before it was cut.
#[derive(Default)]
pub struct AzureStream {
    line: Vec<u8>,
    done: bool,
}

/// A line longer than this cannot be the prompt-filter chunk: it passes through as it comes.
const MAX_HELD_LINE: usize = 64 * 1024;

impl StreamTranslator for AzureStream {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), CallError> {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=newline]);
            self.done |= is_last_line(&self.line);
            if !is_prompt_filter_chunk(&self.line) {
                out.extend_from_slice(&self.line);
            }
            self.line.clear();
            rest = &rest[newline + 1..];
        }
        if self.line.len() + rest.len() > MAX_HELD_LINE {
            out.append(&mut self.line);
            out.extend_from_slice(rest);
        } else {
            self.line.extend_from_slice(rest);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CallError> {
        self.done |= is_last_line(&self.line);
        out.append(&mut self.line);
        if self.done {
            Ok(())
        } else {
            Err(cut_short("azure"))
        }
    }
}

fn is_prompt_filter_chunk(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        id: String,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    let Some(data) = line.trim_ascii().strip_prefix(b"data:") else {
        return false;
    };
    memchr::memmem::find(data, b"prompt_filter_results").is_some()
        && serde_json::from_slice::<Chunk>(data.trim_ascii())
            .is_ok_and(|c| c.choices.is_empty() && c.id.is_empty() && c.usage.is_none())
}

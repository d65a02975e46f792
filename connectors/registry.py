"""Source kinds. Adding a source = a connector module, its SQL under sql/line_items/, tests, one entry here."""

from __future__ import annotations

from connectors.anthropic import AnthropicConnector
from connectors.aws_cur import AwsCurConnector
from connectors.bedrock_logs import BedrockLogsConnector
from connectors.azure_cost import AzureCostConnector
from connectors.focus import FocusConnector
from connectors.gcp_billing import GcpBillingConnector
from connectors.gpu_metrics import GpuMetricsConnector
from connectors.litellm import LiteLLMConnector
from connectors.openai import OpenAIConnector
from connectors.otel_genai import OtelGenAIConnector
from connectors.opencost import OpencostConnector
from connectors.slurm_sacct import SlurmSacctConnector

CONNECTORS = {
    AwsCurConnector.kind: AwsCurConnector,
    AzureCostConnector.kind: AzureCostConnector,
    FocusConnector.kind: FocusConnector,
    GcpBillingConnector.kind: GcpBillingConnector,
    OpenAIConnector.kind: OpenAIConnector,
    AnthropicConnector.kind: AnthropicConnector,
    LiteLLMConnector.kind: LiteLLMConnector,
    BedrockLogsConnector.kind: BedrockLogsConnector,
    OtelGenAIConnector.kind: OtelGenAIConnector,
    SlurmSacctConnector.kind: SlurmSacctConnector,
    OpencostConnector.kind: OpencostConnector,
    GpuMetricsConnector.kind: GpuMetricsConnector,
}


def connector_for(source):
    return CONNECTORS[source.kind](source)

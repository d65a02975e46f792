"""The source kinds apportion knows: kind name -> the connector class that reads it ("module:Class").

The only list of kinds. The config validates `sources[].kind` against it (models import nothing from
connectors), and `connectors.registry` imports a kind's class from it when a source of that kind is used.
Adding a source kind = its connector module, its SQL, its reference data, fixtures, tests, docs page and
one line here.
"""

SOURCE_KINDS: dict[str, str] = {
    "aws_cur": "apportion.connectors.aws_cur:AwsCurConnector",
    "azure_cost": "apportion.connectors.azure_cost:AzureCostConnector",
    "focus": "apportion.connectors.focus:FocusConnector",
    "gcp_billing": "apportion.connectors.gcp_billing:GcpBillingConnector",
    "openai": "apportion.connectors.openai:OpenAIConnector",
    "anthropic": "apportion.connectors.anthropic:AnthropicConnector",
    "litellm": "apportion.connectors.litellm:LiteLLMConnector",
    "bedrock_logs": "apportion.connectors.bedrock_logs:BedrockLogsConnector",
    "otel_genai": "apportion.connectors.otel_genai:OtelGenAIConnector",
    "slurm_sacct": "apportion.connectors.slurm_sacct:SlurmSacctConnector",
    "opencost": "apportion.connectors.opencost:OpencostConnector",
    "gpu_metrics": "apportion.connectors.gpu_metrics:GpuMetricsConnector",
}

import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

/**
 * The SDK, only for processes started with OTEL_EXPORTER_OTLP_ENDPOINT: spans batched and posted
 * as OTLP/HTTP JSON to `<endpoint>/v1/traces` (the exporter reads the standard OTEL_* variables),
 * the W3C propagator and an AsyncLocalStorage context manager registered globally.
 */
export function startSdk(service: string): () => Promise<void> {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": service }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter(), { scheduledDelayMillis: Number(process.env["OTEL_BSP_SCHEDULE_DELAY"] ?? 1000) })],
  });
  provider.register();
  return () => provider.shutdown();
}

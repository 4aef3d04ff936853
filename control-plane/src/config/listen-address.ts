/**
 * Listen addresses (`host:port`, `[ipv6]:port` or `unix:/path`, as gRPC writes them) and ZeroMQ
 * endpoints (`tcp://host:port`, `ipc://path`).
 */

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/;

/** The shape of a listen address (the port range is checked by {@link parseListenAddress}). */
export const LISTEN_ADDRESS_PATTERN = new RegExp(`${HOST_PORT.source}|^unix:.+$`);

/** A parsed TCP listen address, or a Unix socket path. */
export type ListenAddress =
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
  | { readonly kind: "unix"; readonly path: string };

/** Parse `host:port`, `[v6]:port` or `unix:/path`; undefined when malformed or the port is > 65535. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    return path.length > 0 ? { kind: "unix", path } : undefined;
  }
  const match = HOST_PORT.exec(text);
  if (match === null) return undefined;
  const host = match[1] ?? "";
  const port = Number(match[2]);
  return port <= 65535 ? { kind: "tcp", host, port } : undefined;
}

/** Whether an address is reachable only from this machine (loopback or a Unix socket). */
export function isLoopback(address: ListenAddress): boolean {
  if (address.kind === "unix") return true;
  const host = address.host.toLowerCase();
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** A ZeroMQ endpoint this project supports: tcp://host:port (or port *) or ipc://path. */
export const ZMQ_ENDPOINT_PATTERN =
  /^(?:tcp:\/\/(?:\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?:\d{1,5}|\*)|ipc:\/\/.+)$/;

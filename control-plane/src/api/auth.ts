/**
 * Bearer-token auth for tardis.v1.ControlPlane: a server interceptor that answers UNAUTHENTICATED
 * before the handler runs when `authorization: Bearer <token>` is missing or wrong. Health and
 * reflection need no token.
 */

import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

const PROTECTED = "/tardis.v1.ControlPlane/";

/** Whether `header` carries exactly `Bearer <token>`. */
export function bearerMatches(header: unknown, token: string): boolean {
  if (typeof header !== "string") return false;
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (match?.[1] === undefined) return false;
  const given = Buffer.from(match[1]);
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

/** The interceptor; with no token configured every call passes (loopback-only deployments). */
export function authInterceptor(token: string | undefined): grpc.ServerInterceptor {
  return (method, call) => {
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        if (token === undefined || !method.path.startsWith(PROTECTED)) {
          next(metadata);
          return;
        }
        const header = metadata.get("authorization")[0];
        if (bearerMatches(header, token)) {
          next(metadata);
          return;
        }
        call.sendStatus({
          code: grpc.status.UNAUTHENTICATED,
          details:
            header === undefined
              ? "missing authorization metadata: send `authorization: Bearer <token>`"
              : "wrong bearer token",
          metadata: new grpc.Metadata(),
        });
      })
      .build();
    const responder = new grpc.ResponderBuilder().withStart((next) => next(listener)).build();
    return new grpc.ServerInterceptingCall(call, responder);
  };
}

/** The token a Deployment's spec.api.auth names: an environment variable, or a file's first line. */
export function resolveToken(
  auth: { tokenEnv?: string | undefined; tokenFile?: string | undefined } | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (auth === undefined) return undefined;
  if (auth.tokenEnv !== undefined) {
    const value = env[auth.tokenEnv];
    if (!value) {
      throw new Error(`spec.api.auth.tokenEnv: the environment variable ${auth.tokenEnv} is empty`);
    }
    return value.trim();
  }
  if (auth.tokenFile !== undefined) {
    const first = readFileSync(auth.tokenFile, "utf8").split(/\r?\n/)[0]?.trim() ?? "";
    if (first === "") throw new Error(`spec.api.auth.tokenFile: ${auth.tokenFile} is empty`);
    return first;
  }
  return undefined;
}

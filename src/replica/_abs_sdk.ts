/**
 * The Azure Storage SDK, loaded on first use: a process whose replicas are directories or S3
 * never loads it. `@azure/identity` (the default credential chain: environment, managed
 * identity, Azure CLI) is loaded only when neither an account key nor a SAS token is given.
 *
 * The specifiers are string literals, so `deno compile` still embeds both packages.
 *
 * @module
 */

import type * as StorageBlob from "@azure/storage-blob";
import type * as Identity from "@azure/identity";

/** The blob SDK module. */
export type ABSSDK = typeof StorageBlob;
/** The identity SDK module. */
export type AzureIdentity = typeof Identity;

let loading: Promise<ABSSDK> | undefined;
let loadingIdentity: Promise<AzureIdentity> | undefined;

/** Loads `@azure/storage-blob` once; later calls share the same promise. */
export function loadABSSDK(): Promise<ABSSDK> {
  loading ??= import("@azure/storage-blob");
  return loading;
}

/** Loads `@azure/identity` once; later calls share the same promise. */
export function loadAzureIdentity(): Promise<AzureIdentity> {
  loadingIdentity ??= import("@azure/identity");
  return loadingIdentity;
}

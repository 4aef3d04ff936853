/** Traffic routing: weighted sticky splits over pools of workers. */

export { type RequestResult, RequestStats, type WindowStats } from "./request-stats.js";
export {
  NoRouteError,
  type Route,
  type RouteRequest,
  Router,
  VariantNotLoadedError,
} from "./router.js";
export {
  InvalidSplitError,
  type TrafficSplit,
  type VariantWeight,
  validateSplit,
  variantForBucket,
} from "./split.js";
export { stickyBucket } from "./sticky-hash.js";
export {
  LeastLoadedPicker,
  type PoolWorker,
  StaticWorkerPool,
  servingWorkers,
  type WorkerPool,
} from "./worker-pool.js";

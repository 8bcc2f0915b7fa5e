export { openDatabase, fromPGlite, inSchema, type Db, type Queryable, type QueryResult, type OpenDatabaseOptions } from "./db.js";
export { migrate } from "./migrate.js";
export { DataDirBusyError } from "./owner-lock.js";
export { createPostgresTemplate, createTemplate, type DatabaseTemplate } from "./template.js";
export { pgSafe } from "./text.js";
export {
  advanceCheckpoint,
  migrateCheckpoints,
  createCheckpointedFollower,
  readCheckpoint,
  readDeadLetters,
  refusedByDatabase,
  type CheckpointedFollower,
  type DeadLetter,
  type FollowerLogger,
  type FollowerStatus,
} from "./follower.js";

package redisstore

// childEnv, when set, makes the test binary run as a replica; see
// replicas_test.go.
const childEnv = "KEYPOOL_REPLICA"

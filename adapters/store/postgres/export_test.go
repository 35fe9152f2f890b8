package postgres

// FreshSchema creates a schema of its own for one test in the database
// KEFU_TEST_POSTGRES names (skipping the test when it is unset), drops it
// when the test ends, and returns a DSN whose search_path is that schema.
var FreshSchema = freshSchema

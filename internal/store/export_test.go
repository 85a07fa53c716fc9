package store

import "context"

// OpenWithoutBuilderLock opens the PostgreSQL database dsn as Open does,
// but without serializing claims per builder, so that a test can make two
// claims pick the same build number and see the loser retry.
func OpenWithoutBuilderLock(ctx context.Context, dsn string) (*DB, error) {
	d := newPostgres()
	d.lockBuilder = ""
	return openDialect(ctx, d, dsn)
}

package statuscache

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// RunGrouped lets the external tests reach runGrouped.
func (c *Cache) RunGrouped(ctx context.Context, rows int, build func(redis.Pipeliner)) error {
	return c.runGrouped(ctx, rows, build)
}

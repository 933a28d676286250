package nftset

import "errors"

// ErrForeignTable is matched by the error for a table called TableName
// that the library did not make (nat.ErrForeignTable is it).
var ErrForeignTable = errors.New("nftables table inet " + TableName + " exists and is not nsnet's")

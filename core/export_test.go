package core

// SetOfflinePage sets the offline pass's page size for a test and returns
// the function that restores it.
func SetOfflinePage(n int) (restore func()) {
	old := offlinePage
	offlinePage = n
	return func() { offlinePage = old }
}

#include <cblas.h>
// OpenBLAS extensions (declared here because the generic cblas.h alternative may lack them).
char *openblas_get_corename(void);
char *openblas_get_config(void);
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
